"""Input models beyond Gaussian inputs (the hidden manifold model)."""
