"""The names a search setting chooses among, in a module that imports nothing: the modules
that act on them (arch_params, precision, the engine) and the TensorFlow-free ones that
check or offer them (engine_config, the programs' flags) all read them here."""

ARCH_DATA = ("train", "eval")                  # the alpha step's batches (engine)
GATE_MODES = ("full", "two")                   # binary gates over every active op / two sampled
COST_FORMS = ("linear", "absolute")            # arch_params.cost_term: the paper's, TuNAS'
DROP_RULES = ("prob", "alpha")                 # arch_params.drop_mask: p < threshold / M', alpha < threshold
PRECISIONS = ("none", "bfloat16", "float16")   # precision.py's mixed-precision policies
