"""What every method needs: configs, runs, checkpoints, seeding, plotting, the method registry.

Submodules are imported explicitly (``from auxfn.core.runs import Run``) so that
importing ``auxfn.core`` stays cheap; ``auxfn.core.plotting`` loads matplotlib.
"""
