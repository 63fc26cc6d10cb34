"""Adam that updates only the rows of a table that a batch touched.

Keras 3's Adam turns the sparse gradient of an embedding lookup into a dense update of the
whole table, so every step costs ``O(num_users * d)`` however small the batch. :class:`LazyAdam`
applies Adam only to the rows present in ``tf.IndexedSlices`` gradients (``tf.unique`` + segment
sum + scatter), with the same moment and bias-correction arithmetic as Keras' Adam. Its step
count and moments are plain variables, so a checkpoint can save and restore them.
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

    def build(self, variables) -> None:
        for var in variables:
            raw = _raw(var)
            self._slots[id(raw)] = (
                tf.Variable(tf.zeros_like(raw), trainable=False, name=f"m_{var.name}"),
                tf.Variable(tf.zeros_like(raw), trainable=False, name=f"v_{var.name}"),
            )

    def state_variables(self, variables) -> list:
        """The step count and every (m, v) slot, in the order of ``variables``: what a checkpoint saves."""
        out = [self.iterations]
        for var in variables:
            out.extend(self._slots[id(_raw(var))])
        return out

    def apply(self, gradients, variables) -> None:
        self.iterations.assign_add(1)
        t = tf.cast(self.iterations, tf.float32)
        b1, b2 = self.beta_1, self.beta_2
        alpha = self.learning_rate * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        for grad, var in zip(gradients, variables):
            if grad is None:
                continue
            raw = _raw(var)
            m, v = self._slots[id(raw)]
            if isinstance(grad, tf.IndexedSlices):
                rows, position = tf.unique(grad.indices)
                values = tf.math.unsorted_segment_sum(grad.values, position, tf.shape(rows)[0])
                m_rows = b1 * tf.gather(m, rows) + (1.0 - b1) * values
                v_rows = b2 * tf.gather(v, rows) + (1.0 - b2) * tf.square(values)
                m.scatter_update(tf.IndexedSlices(m_rows, rows))
                v.scatter_update(tf.IndexedSlices(v_rows, rows))
                raw.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))
            else:
                m.assign(b1 * m + (1.0 - b1) * grad)
                v.assign(b2 * v + (1.0 - b2) * tf.square(grad))
                raw.assign_sub(alpha * m / (tf.sqrt(v) + self.epsilon))
