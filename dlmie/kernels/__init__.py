"""Compiled PyTensor Ops for the loops that PyTensor's own ops run slowly: one module per concern.

- adam: `AdamUpdate`, one parameter's Adam step in place
- conv: `Im2Col` and `Col2Im`, around the one GEMM of a convolution
- conv_gemm: `ConvGemm`, that GEMM block by block with its bias and ReLU, put in by a rewrite
- batchnorm: `BatchNormTrain` and `BatchNormGrad`, training-mode batch normalization (their C
  code is in batchnorm_c, their NumPy code is the assignment's batchnorm_forward and
  batchnorm_backward)
- depthwise: `DepthwiseConv2d`, MobileNet's depthwise convolution, one pass over the image
- cross_entropy: `SoftmaxCrossEntropy` and its gradient, the loss of every model
- embedding: `EmbeddingGrad`, the gradient of a word-embedding lookup
- pool: `MaxPool`, max pooling over non-overlapping windows
- lstm: `LSTMCell` and its gradient, the gates and cell update of an LSTM step (their C code is
  in lstm_c, their NumPy code is the assignment's lstm_step_forward and lstm_step_backward)

Every Op has a C implementation (used by dlmie's C backend) and a NumPy `perform` (used by the
Python backend, and a readable reference). The student handout leaves out batchnorm_c and lstm_c:
there, those Ops run their `perform`, the student's NumPy code. They take float32 or float64 and keep the dtype.
The loops of conv, conv_gemm, depthwise, pool and batchnorm split their channels among as many threads
as the GEMMs use (`common.PARALLEL_SUPPORT_CODE`); the others run on one core.
"""

from dlmie.kernels.adam import AdamUpdate
from dlmie.kernels.batchnorm import BatchNormGrad, BatchNormTrain
from dlmie.kernels.conv import Col2Im, Im2Col, output_size
from dlmie.kernels.conv_gemm import ConvGemm
from dlmie.kernels.depthwise import DepthwiseConv2d
from dlmie.kernels.cross_entropy import SoftmaxCrossEntropy, SoftmaxCrossEntropyGrad
from dlmie.kernels.embedding import EmbeddingGrad
from dlmie.kernels.lstm import LSTMCell, LSTMCellGrad
from dlmie.kernels.pool import MaxPool

__all__ = ["AdamUpdate", "BatchNormGrad", "BatchNormTrain", "Col2Im", "ConvGemm", "DepthwiseConv2d", "EmbeddingGrad", "Im2Col", "LSTMCell", "LSTMCellGrad", "MaxPool",
           "SoftmaxCrossEntropy", "SoftmaxCrossEntropyGrad", "output_size"]
