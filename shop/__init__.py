"""Example Python for the shipped workflows: a Python step and two tools, no network."""
