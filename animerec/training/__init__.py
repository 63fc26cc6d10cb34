"""The pieces of training, one concern a module; :mod:`animerec.trainer` puts them together in ``fit``.

- :mod:`~animerec.training.sampling`: training arrays and the sampled negatives;
- :mod:`~animerec.training.input_pipeline`: the ``tf.data`` batches;
- :mod:`~animerec.training.lazy_adam`: Adam on the rows a batch touches;
- :mod:`~animerec.training.loops`: the loss and the single-replica and distributed training loops.
"""
