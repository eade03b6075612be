"""Game segments and the PriorZero replay buffer (``BUFFER_REGISTRY`` name ``game_buffer_priorzero``).

Import ``lzero_ext.buffer.game_buffer`` to register the buffer; this package itself imports nothing heavy.
"""
