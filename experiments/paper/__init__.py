"""The paper's experiment (Valindria et al., WACV 2018): flagfiles, presets, driver, tables,
figures.

``python -m experiments.paper.run`` (console script ``dltk-mm-benchmark``) trains every scheme on
every cross-validation fold and seed, evaluates the held-out subjects and writes Tables 1-3 and
Figures 4-7 next to the paper's numbers. See ``experiments/paper/README.md``.
"""
