"""Test bed: real servers on loopback for tests and `camfleet up`."""
