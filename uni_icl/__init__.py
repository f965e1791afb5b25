"""uni_icl: a reproduction of "Why In-Context Learning Models are Good Few-Shot Learners?" (ICLR 2025).

Modules: ``tasks`` (episode generators), ``icl`` / ``meta_learners`` / ``regression`` (learners),
``learners`` (registry), ``training``, ``evaluation``, ``runs`` (train-or-load), ``presets``,
``plotting``. Importing the package does no work; import the modules you need.
"""

__version__ = "0.1.0"
