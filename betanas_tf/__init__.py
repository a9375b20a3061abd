"""betanas_tf: BetaNAS (balanced training and selective drop) in Keras 3 / TensorFlow.

Importing the package is cheap and never imports tensorflow_model_optimization
(which would switch tf.keras to the legacy Keras for the whole process).
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) hides our own
# output; a user who wants it sets TF_CPP_MIN_LOG_LEVEL explicitly.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
