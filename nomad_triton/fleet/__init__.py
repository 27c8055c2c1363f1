"""Fleets: multi-pool rollouts in ordered, gated stages, and the one-table view of every toolkit job."""
