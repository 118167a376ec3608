"""Gradient estimators for discrete random variables, as drop-in torch functions.

Sample-type estimators (forward: the sample; gradient: the estimator)::

    y = st_gumbel_softmax(logits, tau=0.5)          # like F.gumbel_softmax(hard=True)
    y = gumbel_rao(logits, tau=0.1, k=100)          # Rao-Blackwellised ST-GS

Estimators that need the objective's value take the objective (a function of a sampler)::

    surrogate = rloo(lambda sample: loss(sample(logits)), k=4)
    surrogate.mean().backward()

One interface over both: ``get(name, **hyper)(objective)``; ``available()`` lists them all.
"""

# isort: skip_file
# Import order is registration order, which is the order of `available()`: the paper's
# sample-type estimators, then score-function ones, then the binary-only and exact ones.
from gvbench.estimators.straight_through import (
    decoupled_straight_through,
    gapped_straight_through,
    gapped_straight_through_p,
    gumbel_softmax,
    st_gumbel_softmax,
    straight_through,
)
from gvbench.estimators.gumbel_rao import gumbel_rao
from gvbench.estimators.zgr import zgr
from gvbench.estimators.reinmax import reinmax, reinmax_alpha
from gvbench.estimators.reinmax_rao import reinmax_cv, reinmax_rao
from gvbench.estimators.score_function import RunningMean, reinforce, rloo
from gvbench.estimators.unordered_set import unordered_set
from gvbench.estimators.indecater import indecater, indecater_d
from gvbench.estimators.copula import arms, carms
from gvbench.estimators.categorical_disarm import categorical_disarm
from gvbench.estimators.arsm import arsm
from gvbench.estimators.relax import ControlVariate, rebar, relax
from gvbench.estimators.binary import arm, disarm, foust_reconstruction
from gvbench.estimators.layerwise import arm_layerwise, disarm_layerwise
from gvbench.estimators.bit_flips import bitflip_1, ugc
from gvbench.estimators.darn import darn
from gvbench.estimators.double_cv import ControlWeight, double_cv
from gvbench.estimators.rodeo import SteinControl, rodeo
from gvbench.estimators.simple import simple
from gvbench.estimators.imle import AdaptiveLambda, aimle, imle
from gvbench.estimators.sfess import sfess
from gvbench.estimators.top_k import relaxed_top_k, st_gumbel_top_k
from gvbench.estimators.subset_score_function import subset_reinforce, subset_rloo
from gvbench.estimators.enumeration import enumerate_expectation, exact
from gvbench.estimators.registry import (
    Choices,
    Estimator,
    EstimatorInfo,
    Objective,
    Sampler,
    SubsetSampler,
    available,
    checked_k,
    get,
    info,
    parse,
    register,
    variants,
)
from gvbench.estimators.adapters import bernoulli, categorical_from_bernoulli
from gvbench.estimators.state import EstimatorState
from gvbench.estimators.surrogates import ScoreRecorder, log_prob
from gvbench.estimators.sampling import (
    categorical_index,
    categorical_one_hot,
    conditional_gumbel,
    gumbel_like,
    one_hot_argmax,
    replace_gradient,
)
from gvbench.estimators.streams import RunStream, RunStreams
from gvbench.estimators.validation import set_validate_args

__all__ = [
    "AdaptiveLambda",
    "Choices",
    "ControlVariate",
    "ControlWeight",
    "Estimator",
    "EstimatorInfo",
    "EstimatorState",
    "Objective",
    "RunStream",
    "RunStreams",
    "RunningMean",
    "Sampler",
    "ScoreRecorder",
    "SteinControl",
    "SubsetSampler",
    "aimle",
    "arm",
    "arm_layerwise",
    "arms",
    "arsm",
    "available",
    "bernoulli",
    "bitflip_1",
    "carms",
    "categorical_disarm",
    "categorical_from_bernoulli",
    "categorical_index",
    "categorical_one_hot",
    "checked_k",
    "conditional_gumbel",
    "darn",
    "decoupled_straight_through",
    "disarm",
    "disarm_layerwise",
    "double_cv",
    "enumerate_expectation",
    "exact",
    "foust_reconstruction",
    "gapped_straight_through",
    "gapped_straight_through_p",
    "get",
    "gumbel_like",
    "gumbel_rao",
    "gumbel_softmax",
    "imle",
    "indecater",
    "indecater_d",
    "info",
    "log_prob",
    "one_hot_argmax",
    "parse",
    "rebar",
    "register",
    "reinforce",
    "reinmax",
    "reinmax_alpha",
    "reinmax_cv",
    "reinmax_rao",
    "relax",
    "relaxed_top_k",
    "replace_gradient",
    "rloo",
    "rodeo",
    "set_validate_args",
    "sfess",
    "simple",
    "st_gumbel_softmax",
    "st_gumbel_top_k",
    "straight_through",
    "subset_reinforce",
    "subset_rloo",
    "ugc",
    "unordered_set",
    "variants",
    "zgr",
]
