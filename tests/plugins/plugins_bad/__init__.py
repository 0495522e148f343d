"""Throwaway plugins, each wrong in one way, that the conformance kit must catch.

Each module is a complete plugin (a ``mlcore_activations`` or ``mlcore_losses`` hook); the
tests install some as distributions with the ``make_dist`` fixture, and check the classes
directly with :func:`mlcore.testing.check_activation` / :func:`check_loss`.
"""
