"""The HTTP edge: the listener the daemon and `reconcile serve` share, and its pages."""
