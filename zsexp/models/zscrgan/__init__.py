"""ZSCRGAN (Roy et al., CIKM 2020): a conditional WGAN generating per-class representative
embeddings, a Common Space Embedding Mapper (CSEM), trained alternately by E-M (Alg. 1), and
text-to-image retrieval by Alg. 2.

Code (paper): ``te`` (Text Encoder TE, phi -> N(mu, Sigma)), ``gen`` (G(z, c)), ``disc``
(D(I, phi)), ``csem`` (CSEM, psi_C); ``c_r``/``c_w`` (c_tr / c_tw), ``phi_r``/``phi_w``
(phi_tr / phi_tw), ``img_r``/``img_w`` (I_r / I_w), ``fake_r``/``fake_w`` (i_r / i_w).

Choices where the paper is loose (documented, each switchable):

* **The regulariser sign (eq. 12).**  Eq. 12 writes ``beta * -E[R]`` while R = -log-odds =
  d_p - d_n (eqs. 13-15) must be *minimised* for the generated embedding to approach I_r and
  leave I_w.  We minimise ``+beta * E[R]``, as the reference code does
  (``|G - I_r| - |G - I_w| + 2`` added to the generator loss).
* **Distances and margin.**  d_p, d_n are Manhattan distances summed over the image dimensions
  (reference: ``reduce_sum(abs(.), axis=1)``), averaged over the batch.  With the linear form of
  eq. 15 the margin lambda only shifts R by a constant and does not change any gradient (the
  reference adds a constant 2.0); ``r_form="hinge"`` uses ``max(0, d_p - d_n)`` with
  d_n = |I_w - i| - lambda, where lambda does act as the margin the text describes.
* **"JS divergence" of the text encoder (eqs. 12, 17).**  JS between Gaussians has no closed form;
  the conditioning-augmentation design it comes from (and the reference ``KL_loss``) uses
  KL(N(mu, sigma^2) || N(0, I)) = -log sigma + (sigma^2 + mu^2 - 1) / 2, averaged over
  elements.  The paper variant adds it for c_tr and c_tw (``alpha * (KL_r + KL_w)``); the
  reference variant halves the sum.
* **Critic loss (eqs. 11, 16).**  Eq. 16 read literally weighs the fake terms twice as much as
  eq. 11; we use eq. 11 = ``(E D(G) + E D(I_w)) / 2 - E D(I_r)`` (both sources get equal weight,
  as the text says; same as the reference).  The Lipschitz constraint of eq. 10 is weight
  clipping of every critic parameter to ``[-clip, clip]`` after each critic step (0.01, WGAN's
  and the reference's value).
* **CSEM loss (eqs. 7-9, Alg. 1 l.11-14).**  i = G(z, c_tr) and G(z', c_tw) are both generated:
  the CSEM never sees a real image in training.  Paper: the mean over the batch of
  softplus(v_n - v_p); reference: softplus(mean v_n - mean v_p).
* **E-step objective (eq. 4).**  The E-step maximises F(P, psi_C), whose CSEM term is -L_T, so the
  generator (and TE) also minimise L_T with the CSEM frozen: eq. 12 + L_T, in both variants (the
  reference code does the same).  The CSEM moves only in the M-step (Alg. 1 l.10-15) -- that is
  what separates E-M from ``training="joint"`` (Fig. 2), where one step updates both.  The M-step
  runs G without gradients (G is frozen there).
* **Optimisers.**  RMSprop for G/TE and D with torch's defaults (``rms_alpha`` 0.99, ``rms_eps``
  1e-8); the authors' TensorFlow used decay 0.9 and epsilon 1e-10 (set those keys to match it).
* **Test time (Alg. 2).**  c_hat = mu(phi_t) (``eval_c="mean"``) or a sample; z ~ N(0, I);
  with ``eval_z_samples > 1`` the CSEM outputs of several z are averaged.  Evaluation draws
  from its own fixed-seed generator, so it neither depends on nor disturbs training state.
* **Ablations (Table 8).**  ``no_wrong``: no wrong class anywhere (critic without I_w, R = d_p,
  no KL on c_tw, CSEM loss softplus(-v_p)); ``no_r``: beta = 0; ``no_triplet``: no M-step, and
  with no trained CSEM retrieval compares G's output with the images in the image space;
  ``no_r_triplet``: both; ``no_gan``: no G and D -- the representative embedding is replaced by
  the real image: the CSEM (with the TE, since nothing else trains it) learns the triplet loss
  on real I_r / I_w, and the query is the text latent mu(phi_t) itself.

The modules: ``model`` (config, losses, networks: the paper's equations), ``trainer`` (``ZSCRGAN``, the
training procedure and its checkpoint state).  The paper's ablation table is in ``zsexp.ablation.paper``.
"""

from zsexp.models.zscrgan.model import (  # noqa: F401 - the family's public names, one import away
    ABLATIONS,
    CSEM,
    Discriminator,
    Generator,
    TextEncoder,
    ZSCRGANConfig,
    alg2_query_embedding,
    critic_loss,
    generator_loss,
    kl_standard_normal,
    log_odds_regulariser,
    pool_queries,
    query_inputs,
    reparameterise,
    triplet_loss,
)
from zsexp.models.zscrgan.trainer import ZSCRGAN  # noqa: F401
