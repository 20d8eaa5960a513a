"""Every place zsexp reaches inside a library: one small module per library, each name a function.

Ray Tune and Optuna keep some of what zsexp needs in private attributes (a search generator's target,
ASHA's rungs, the study under Ray's ``OptunaSearch``, a distribution's membership test).  Code
elsewhere in zsexp calls these functions and never touches a private name itself; ``tests/test_compat.py``
builds the real objects of the installed versions and calls every function, so an upgrade that renames
one fails there, loudly and by name, instead of somewhere in a resumed sweep.  The versions tested are
the ones ``pyproject.toml`` bounds and ``constraints.txt`` pins.
"""
