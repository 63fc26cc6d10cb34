"""Adam that updates only the rows of a table that a batch touched.

Keras 3's Adam turns the sparse gradient of an embedding lookup into a dense update of the
whole table, so every step costs ``O(num_users * d)`` however small the batch. :class:`LazyAdam`
applies Adam only to the rows present in ``tf.IndexedSlices`` gradients, with the same moment
and bias-correction arithmetic as Keras' Adam: ``tf.unique`` + segment sum of the batch's rows,
the touched rows of the table and its moments gathered into scratch variables, TensorFlow's
fused ``ApplyAdam`` kernel run on them (one pass instead of a dozen elementwise ops), and the rows
scattered back. Its step count and moments are plain variables, so a checkpoint can save and
restore them; the scratch variables only hold the last step's rows, which no later step reads.
"""

from __future__ import annotations

import tensorflow as tf


def _raw(variable):
    """The tf.Variable behind a Keras 3 variable."""
    if isinstance(variable, tf.Variable):
        return variable
    value = variable.value
    return value if isinstance(value, tf.Variable) else variable._value


class LazyAdam:
    """Adam that updates only the rows present in ``tf.IndexedSlices`` gradients."""

    def __init__(self, learning_rate: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        self.learning_rate = tf.Variable(learning_rate, dtype=tf.float32, trainable=False, name="learning_rate")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._slots: dict[int, tuple[tf.Variable, tf.Variable]] = {}
        self._scratch: dict[int, tuple[tf.Variable, tf.Variable, tf.Variable]] = {}

    def build(self, variables) -> None:
        for var in variables:
            raw = _raw(var)
            self._slots[id(raw)] = (
                tf.Variable(tf.zeros_like(raw), trainable=False, name=f"m_{var.name}"),
                tf.Variable(tf.zeros_like(raw), trainable=False, name=f"v_{var.name}"),
            )
            if raw.shape.rank >= 1:
                # [touched rows, ...]: the rows of the table, m and v that one step updates
                shape = tf.TensorShape([None]).concatenate(raw.shape[1:])
                empty = tf.zeros([0, *raw.shape[1:]], raw.dtype)
                self._scratch[id(raw)] = tuple(
                    tf.Variable(empty, shape=shape, trainable=False, name=f"{kind}_rows_{var.name}")
                    for kind in ("var", "m", "v"))

    def state_variables(self, variables) -> list:
        """The step count and every (m, v) slot, in the order of ``variables``: what a checkpoint saves."""
        out = [self.iterations]
        for var in variables:
            out.extend(self._slots[id(_raw(var))])
        return out

    def apply(self, gradients, variables) -> None:
        self.iterations.assign_add(1)
        t = tf.cast(self.iterations, tf.float32)
        # the kernel's scalar inputs, once per step for every variable
        hyper = {"beta1_power": tf.pow(self.beta_1, t), "beta2_power": tf.pow(self.beta_2, t),
                 "lr": tf.convert_to_tensor(self.learning_rate), "beta1": tf.constant(self.beta_1),
                 "beta2": tf.constant(self.beta_2), "epsilon": tf.constant(self.epsilon)}
        for grad, var in zip(gradients, variables):
            if grad is None:
                continue
            raw = _raw(var)
            m, v = self._slots[id(raw)]
            if isinstance(grad, tf.IndexedSlices):
                rows, position = tf.unique(grad.indices)
                values = tf.math.unsorted_segment_sum(grad.values, position, tf.shape(rows)[0])
                var_rows, m_rows, v_rows = self._scratch[id(raw)]
                var_rows.assign(tf.gather(raw, rows))
                m_rows.assign(tf.gather(m, rows))
                v_rows.assign(tf.gather(v, rows))
                self._adam(var_rows, m_rows, v_rows, values, hyper)
                raw.scatter_update(tf.IndexedSlices(var_rows.read_value(), rows))
                m.scatter_update(tf.IndexedSlices(m_rows.read_value(), rows))
                v.scatter_update(tf.IndexedSlices(v_rows.read_value(), rows))
            else:
                self._adam(raw, m, v, grad, hyper)

    @staticmethod
    def _adam(var, m, v, grad, hyper) -> None:
        """TensorFlow's fused Adam kernel: m, v and var updated in place, as Keras' Adam computes them."""
        dtype = var.dtype
        tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, grad=tf.cast(grad, dtype),
                                     **{name: tf.cast(value, dtype) for name, value in hyper.items()})
