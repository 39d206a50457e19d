"""What is scored: the region of interest R (the clicked component), the scoring region, and the value functions.

- ``roi``:    the ROI from a click (RAS mm or IJK), its bounding box, the scoring region (box / component / dilated).
- ``values``: the value functions tp / fp / dice / softdice, vectorised over a batch of coalitions.
"""
