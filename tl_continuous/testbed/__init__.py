"""A counting testbed: a tiny transformer trained here that counts, for the continuity effect.

* :mod:`~tl_continuous.testbed.task`: the vocabulary :data:`VOCAB` (encode/decode prompts)
  and the seeded prompt generator :class:`CountingTask`;
* :mod:`~tl_continuous.testbed.model`: the config and the shipped checkpoint
  (:func:`load_testbed`, also ``tl_continuous.load_model("counting-testbed")``);
* :mod:`~tl_continuous.testbed.train`: training, ``tl-continuous train-testbed``;
* :mod:`~tl_continuous.testbed.experiment`: E[count] against summed durations.

>>> model = load_testbed()
>>> logits = model(VOCAB.encode("<bos> pear apple . apple how-many apple")[None])
>>> VOCAB.decode([int(logits[0, -1].argmax())])
'2'
"""

from __future__ import annotations

from tl_continuous.testbed.experiment import VARIANTS, CountingContinuityResult
from tl_continuous.testbed.model import load_testbed, training_record
from tl_continuous.testbed.task import VOCAB, CountingExample, CountingTask, Vocabulary

__all__ = [
    "VARIANTS",
    "VOCAB",
    "CountingContinuityResult",
    "CountingExample",
    "CountingTask",
    "Vocabulary",
    "load_testbed",
    "training_record",
]
