"""Similar anime and similar users: the taste index and the choice of its blend.

- :mod:`animerec.taste.index`: :class:`TasteIndex` (numpy and scipy only: what serving loads) and the
  parts it blends (co-occurrence, content, EASE neighbours);
- :mod:`animerec.taste.choice`: the blend's weights and EASE L2 chosen by K-fold cross-validation, and
  the index's fit (:func:`fit_taste`).
"""

from animerec.taste.index import TasteIndex

__all__ = ["TasteIndex"]
