"""CM-GAN (Cross-Modal CycleGAN for transductive zero-shot learning).

Code (paper): ``t0`` (T0, label embeddings), ``v0`` (V0, CONSE image representations, eq. 1),
``v_hat``/``t_hat`` (v̂ = T̂_{k-1}(v), t̂ = V̂_{k-1}(t)), ``t_map``/``v_map`` (T_k image -> text,
V_k text -> image), ``d_t``/``d_v`` (D_T, D_V), ``kept`` (the composed T̂_k / V̂_k).

Learning (§3.4): step k = 1, 2, ... alternates a supervised step (odd k: train T_k, V_k with
L_sup, eq. 2; keep T_k, so T̂_k = T_k ∘ T̂_{k-1}) and a transductive step (even k: train with
L_cgan, eqs. 3-6; keep V_k, so V̂_k = V_k ∘ V̂_{k-1}).  Each step trains on representations
frozen from the previous step.  After each step the validation measure -- L_sup (eq. 2) on
held-out seen-class images -- decides: if step k+1 does not improve on step k, step k+1 is
discarded and training stops (§3.4 "Outcome"); otherwise training stops at ``max_steps`` K.
Retrieval is a nearest-neighbour (cosine) search between T̂_K(v) and V̂_K(t) in the shared space.

Choices where the paper is open (all switchable):

* Role of classes.  ``fit_split="train"`` (tuning): seen = train classes, the transductive
  "unseen" set = val classes and their unlabelled images; ``fit_split="trainval"`` (final
  model): seen = train + val, unseen = the test classes and their unlabelled images, the
  transductive protocol of the paper.  Test classes are never touched when fitting on train.
* Maps T_k, V_k: 2-layer perceptrons.  ``map_init="residual"`` (default) adds the identity and
  zero-initialises the output layer, so a step starts from the previous representation instead
  of a random scramble of it; ``"plain"`` is a bare perceptron.
* Adversarial losses (eqs. 4-5): binary cross-entropy on discriminator logits; the maps minimise
  the non-saturating form -log D(.) rather than log(1 - D(.)).
* Cycle loss (eq. 6): the L2 norm, **not squared**, averaged over samples (``cycle_norm``:
  ``l2`` | ``l2_squared`` | ``l1``).
* Negatives of eq. 2: t⁻ a uniformly drawn other seen class; v⁻ an image of another uniformly
  drawn seen class (class first, then one of its images, so v⁻ never shares v's class).  Class
  positions come from a lookup table, not a search: with ``fit_split="trainval"`` the seen classes
  are train followed by val, which is not sorted.
* Stopping rule: step 1 is compared with the CONSE start (V0, T0) like every later step with its
  predecessor, so a first step that makes validation L_sup worse is discarded too.
* CONSE probabilities (eq. 1) for ``fit_split="train"`` (tuning) come from a softmax classifier
  fitted here on the train classes' images, never on the images held out for validation L_sup:
  probabilities a dataset ships were made by a classifier that knew every seen class, validation
  classes included.  For ``trainval`` the shipped ones are used (a warning says the held-out
  images may have trained them); ``conse_probs="fit"`` always fits.
* λ_c: one value per transductive step (``lambda_c``, paper's final model 1, 10, 1); when there
  are more transductive steps than values, the last value repeats.
* Ablations (Table 5) each run one step of one objective: ``conse`` (no training: V0 and T0),
  ``cycle`` (L_c), ``gan`` (L_gan), ``cgan`` (L_gan + λ_c L_c), ``sup`` (L_sup); ``full`` alternates.
* Sentence mode (§4.7): per-image caption embeddings are the labels; no supervision, one
  transductive step; validation = mean cosine between the images and their predicted (nearest)
  sentences.  Evaluation: text->image and image->text retrieval, MFR and FH@{1,5,10}.

The modules: ``model`` (config, losses, networks: the paper's equations), ``trainer`` (``CMGAN``, the
training procedure and its checkpoint state).  The paper's ablation table is in ``zsexp.ablation.paper``.
"""

from zsexp.models.cmgan.model import (  # noqa: F401 - the family's public names, one import away
    ABLATIONS,
    CMGANConfig,
    Critic,
    CrossModalMap,
    _class_table,
    _ClassTable,
    adversarial_map_loss,
    cycle_loss,
    discriminator_loss,
    supervised_loss,
)
from zsexp.models.cmgan.trainer import CMGAN  # noqa: F401
