"""The opt-in CPU speed paths, in one place: what the performance appendix, *Where the
time goes*, measures, and nothing that runs by default uses.

With default arguments a model, a step and ``fit`` run the code the chapters teach, on
any backend. These modules compute the same functions another way, because XLA:CPU runs
that way faster; each changes no result a reader gets from the defaults (the same
numbers to float32 rounding), and each is tested against a float64 reference:

- :mod:`companion.fast.rows` — one group of a batch's rows per core: the grouped loss
  and the chapter-5 scanned epoch with row groups;
- :mod:`companion.fast.winograd` — a 3×3 convolution by Winograd's F(2×2, 3×3), with a
  hand-written gradient;
- :mod:`companion.fast.conv` — convolution as patches × matrix or shifted taps, pooling
  as a reshape, :class:`~companion.fast.conv.FastConv` and
  :func:`~companion.fast.conv.fast_cnn` (chapter 6's CNN computed that way);
- :mod:`companion.fast.nnx_loop` — an NNX training loop that runs many steps per
  compiled call, each batch in row groups.

``python -m companion.bench`` times them beside the defaults.
"""
