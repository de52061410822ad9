"""Training losses of the zoo's dense-prediction families (reusable outside their models)."""
