"""Continuous tokens ("Language Models Are Implicitly Continuous", ICLR 2025).

A prompt becomes a piecewise-constant signal in time: token ``j`` lasts ``d_j`` and ends at
``p_j = t0 + d_0 + ... + d_j``. The modules here hold one idea each:

* :mod:`.durations`: the :class:`~.durations.Durations` dataclass and its builders;
* :mod:`.attention`: the log-duration term added to the pre-softmax scores;
* :mod:`.positions`: real positions for rotary and learned absolute position tables;
* :mod:`.signal`: the HookPoints spliced into the model and the ``continuous()`` context;
* :mod:`.blend`: interpolation between the input embeddings of two prompts;
* :mod:`.reference_hf`: the same mechanism through Hugging Face ``transformers`` (a reference).
"""

from __future__ import annotations

__all__: list[str] = []
