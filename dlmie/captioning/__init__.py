"""Captioning beyond the model: decoding (greedy, beam search), evaluation, attention figures."""
