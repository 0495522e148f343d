"""Array helpers below everything that computes: the namespace and device of arrays
(:mod:`.namespace`), numerically stable formulas (:mod:`.numerics`), argument checks
(:mod:`.checks`) and the checks and domains of loss inputs (:mod:`.loss_checks`,
:mod:`.loss_domains`). Written against the Array API; no array library is imported."""
