"""Caffe's solvers in Keras: the solver prototxt, its learning-rate policy and its update rules.

:func:`load` reads a ``solver.prototxt`` and checks it as Caffe's solvers do.
:class:`CaffeLearningRate` is ``lr_policy`` as a Keras schedule of Caffe's iteration.
:class:`CaffeSolver` is one Keras optimizer for Caffe's six solver types. It follows Caffe's
``SGDSolver::ApplyUpdate`` step by step: the gradient summed over ``iter_size`` passes is clipped
to ``clip_gradients`` (global L2 norm), divided by ``iter_size``, regularised (weight decay
added to the gradient, before momentum: Caffe's decay is not Keras' decoupled one), then the
type's update with ``rate * lr_mult``; ``decay_mult`` and ``lr_mult`` are per Caffe blob.
"""

import math

import keras
from keras import ops

from . import prototxt
from .errors import ConversionError
from .schema import caffe_pb2, float32_value

register = keras.saving.register_keras_serializable(package="caffe2keras")

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
# The legacy ``solver_type`` enum, by value, as Caffe's UpgradeSolverType maps it.
LEGACY_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                "ADADELTA": "AdaDelta", "ADAM": "Adam"}
POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def load(path):
    """Read and check a solver prototxt; returns the SolverParameter (``type`` filled in)."""
    param = prototxt.parse_text(prototxt.read_text(path), path=str(path), message=caffe_pb2.SolverParameter())
    check(param, path)
    return param


def check(param, path=None):
    """Refuse what Caffe's solvers refuse (or would divide by zero on), one line each."""

    def fail(message):
        raise ConversionError(message, file=path)

    if param.HasField("solver_type"):
        legacy = LEGACY_TYPES[caffe_pb2.SolverParameter.SolverType.Name(param.solver_type)]
        if param.HasField("type") and param.type != legacy:
            fail(f"solver_type {legacy} and type {param.type} disagree; give only type")
        param.type = legacy
    if param.type not in SOLVER_TYPES:
        fail(f"unknown solver type '{param.type}' (Caffe's are {', '.join(SOLVER_TYPES)})")
    if param.lr_policy not in POLICIES:
        fail(f"unknown lr_policy '{param.lr_policy}' (Caffe's are {', '.join(POLICIES)})")
    if param.lr_policy == "step" and param.stepsize <= 0:
        fail("lr_policy step needs a positive stepsize")
    if param.lr_policy == "poly" and param.max_iter <= 0:
        fail("lr_policy poly needs a positive max_iter")
    if param.type in ("AdaGrad", "RMSProp") and param.momentum != 0:
        fail(f"momentum cannot be used with {param.type} (Caffe refuses it)")
    if param.type == "RMSProp" and not 0 <= param.rms_decay < 1:
        fail("rms_decay must be in [0, 1)")
    if param.iter_size < 1:
        fail("iter_size must be at least 1")
    if param.regularization_type not in ("L1", "L2"):
        fail(f"unknown regularization_type '{param.regularization_type}' (L1 or L2)")
    if param.HasField("train_state") and (param.train_state.stage or param.train_state.level):
        fail("train_state with stages or a level is not supported (layers are chosen by phase only)")


@register
class CaffeLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Caffe's ``lr_policy`` at Caffe iteration ``step`` (0 for the first update)::

        fixed      base_lr
        step       base_lr * gamma ^ floor(iter / stepsize)
        exp        base_lr * gamma ^ iter
        inv        base_lr * (1 + gamma * iter) ^ -power
        multistep  base_lr * gamma ^ (how many steps Caffe has taken by iter, see below)
        poly       base_lr * (1 - iter / max_iter) ^ power
        sigmoid    base_lr / (1 + exp(-gamma * (iter - stepsize)))

    Caffe's multistep advances at most one step per iteration, when ``iter >= stepvalue[k]``
    for the next ``k``: step ``k`` is taken at ``max(stepvalue[k], iteration of step k-1 + 1)``,
    which differs from counting the passed stepvalues when they repeat or are out of order.
    """

    def __init__(self, policy="fixed", base_lr=0.01, gamma=0.0, power=0.0, stepsize=0, stepvalue=(), max_iter=0):
        self.policy = policy
        self.base_lr = float(base_lr)
        self.gamma = float(gamma)
        self.power = float(power)
        self.stepsize = int(stepsize)
        self.stepvalue = [int(v) for v in stepvalue]
        self.max_iter = int(max_iter)
        taken, last = [], -math.inf
        for value in self.stepvalue:
            last = max(value, last + 1)
            taken.append(last)
        self._steps_taken_at = taken

    @classmethod
    def from_solver(cls, param):
        f = float32_value
        return cls(policy=param.lr_policy, base_lr=f(param.base_lr), gamma=f(param.gamma), power=f(param.power),
                   stepsize=param.stepsize, stepvalue=list(param.stepvalue), max_iter=param.max_iter)

    def __call__(self, step):
        it = ops.cast(step, "float32")
        base, gamma = self.base_lr, self.gamma
        if self.policy == "fixed":
            return ops.convert_to_tensor(base, "float32") + 0.0 * it
        if self.policy == "step":
            return base * ops.power(gamma, ops.floor(it / self.stepsize))
        if self.policy == "exp":
            return base * ops.power(gamma, it)
        if self.policy == "inv":
            return base * ops.power(1.0 + gamma * it, -self.power)
        if self.policy == "multistep":
            if not self._steps_taken_at:
                return ops.convert_to_tensor(base, "float32") + 0.0 * it
            taken = ops.sum(ops.cast(it >= ops.convert_to_tensor(self._steps_taken_at, "float32"), "float32"))
            return base * ops.power(gamma, taken)
        if self.policy == "poly":
            return base * ops.power(1.0 - it / self.max_iter, self.power)
        return base / (1.0 + ops.exp(-gamma * (it - self.stepsize)))

    def get_config(self):
        return {
            "policy": self.policy,
            "base_lr": self.base_lr,
            "gamma": self.gamma,
            "power": self.power,
            "stepsize": self.stepsize,
            "stepvalue": self.stepvalue,
            "max_iter": self.max_iter,
        }


@register
class CaffeSolver(keras.optimizers.Optimizer):
    """Caffe's SGD, Nesterov, AdaGrad, RMSProp, AdaDelta and Adam solvers, exactly.

    With ``g`` the gradient (averaged over ``iter_size`` passes, clipped as Caffe clips their
    sum), ``d = decay * decay_mult * (w for L2, sign(w) for L1)``, ``r = rate * lr_mult`` and
    ``t = iter + 1``::

        SGD       v ← μ v + r (g + d);                         w ← w − v
        Nesterov  v' ← μ v + r (g + d);                        w ← w − ((1 + μ) v' − μ v)
        AdaGrad   h ← h + (g + d)²;                            w ← w − r (g + d) / (√h + δ)
        RMSProp   h ← ρ h + (1 − ρ) (g + d)²;                  w ← w − r (g + d) / (√h + δ)
        AdaDelta  h ← μ h + (1 − μ)(g + d)²;  u = (g + d) √((s + δ) / (h + δ));
                  s ← μ s + (1 − μ) u²;                        w ← w − r u
        Adam      m ← β1 m + (1 − β1)(g + d);  v ← β2 v + (1 − β2)(g + d)²;
                  w ← w − r √(1 − β2^t) / (1 − β1^t) · m / (√v + δ)

    (μ = ``momentum``, β1 = ``momentum``, β2 = ``momentum2``, ρ = ``rms_decay``, δ = ``delta``.)
    ``multipliers`` maps a variable's path (``conv1/kernel``) to Caffe's ``[lr_mult,
    decay_mult]`` of its blob (default ``[1, 1]``); a variable with ``lr_mult`` 0 never changes
    and its gradient does not count towards the clipping norm, as in Caffe.
    """

    def __init__(self, learning_rate=0.01, solver_type="SGD", momentum=0.0, momentum2=0.999, delta=1e-8,
                 rms_decay=0.99, decay=0.0, regularization_type="L2", clip_gradients=-1.0, iter_size=1,
                 multipliers=None, name="caffe_solver", **kwargs):
        kwargs.pop("gradient_accumulation_steps", None)
        iter_size = int(iter_size)
        super().__init__(learning_rate=learning_rate, name=name,
                         gradient_accumulation_steps=iter_size if iter_size > 1 else None, **kwargs)
        if solver_type not in SOLVER_TYPES:
            raise ValueError(f"unknown Caffe solver type {solver_type!r}")
        self.solver_type = solver_type
        self.momentum = float(momentum)
        self.momentum2 = float(momentum2)
        self.delta = float(delta)
        self.rms_decay = float(rms_decay)
        self.decay = float(decay)
        self.regularization_type = regularization_type
        self.clip_gradients = float(clip_gradients)
        self.iter_size = iter_size
        self.multipliers = {str(k): [float(v[0]), float(v[1])] for k, v in (multipliers or {}).items()}

    @classmethod
    def from_solver(cls, param, multipliers=None):
        f = float32_value
        return cls(learning_rate=CaffeLearningRate.from_solver(param), solver_type=param.type,
                   momentum=f(param.momentum), momentum2=f(param.momentum2), delta=f(param.delta),
                   rms_decay=f(param.rms_decay), decay=f(param.weight_decay),
                   regularization_type=param.regularization_type, clip_gradients=f(param.clip_gradients),
                   iter_size=param.iter_size, multipliers=multipliers)

    def _multipliers(self, variable):
        return self.multipliers.get(variable.path, (1.0, 1.0))

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._mults = [self._multipliers(v) for v in variables]
        names = {"AdaDelta": ("history", "update_history"), "Adam": ("m", "v")}.get(self.solver_type, ("history",))
        self._slots = [
            [self.add_variable_from_reference(reference_variable=v, name=n) for n in names] for v in variables
        ]

    def caffe_iteration(self):
        """Caffe's ``iter_``: how many updates were applied (Keras counts every ``iter_size`` pass)."""
        return self._iterations // self.iter_size

    def _get_current_learning_rate(self):
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.caffe_iteration())
        return super()._get_current_learning_rate()

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
        variables = trainable_variables if trainable_variables is not None else self._trainable_variables
        # Caffe computes no gradient for a blob with lr_mult 0: it stays out of the clipping norm.
        grads = [
            g if g is None or self._multipliers(v)[0] != 0 else ops.zeros_like(g) for g, v in zip(grads, variables)
        ]
        return super().apply(grads, trainable_variables)

    def _clip_gradients(self, grads):
        if self.clip_gradients < 0:
            return grads
        present = [g for g in grads if g is not None]
        if not present:
            return grads
        # Caffe clips the sum of the iter_size passes' gradients; Keras hands over their mean.
        norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in present)) * self.iter_size
        scale = ops.where(norm > self.clip_gradients, self.clip_gradients / ops.maximum(norm, 1e-30), 1.0)
        return [None if g is None else g * ops.cast(scale, g.dtype) for g in grads]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        lr_mult, decay_mult = self._mults[index]
        if lr_mult == 0:
            return
        dtype = variable.dtype
        g = ops.cast(gradient, dtype)
        local_decay = self.decay * decay_mult
        if local_decay:
            g = g + local_decay * (variable if self.regularization_type == "L2" else ops.sign(variable))
        rate = ops.cast(learning_rate, dtype) * lr_mult
        slots = self._slots[index]
        mu, delta = self.momentum, self.delta
        kind = self.solver_type
        if kind == "SGD":
            (history,) = slots
            self.assign(history, mu * history + rate * g)
            self.assign_sub(variable, history)
        elif kind == "Nesterov":
            (history,) = slots
            updated = mu * history + rate * g
            step = (1.0 + mu) * updated - mu * history
            self.assign(history, updated)
            self.assign_sub(variable, step)
        elif kind in ("AdaGrad", "RMSProp"):
            (history,) = slots
            if kind == "AdaGrad":
                self.assign_add(history, ops.square(g))
            else:
                self.assign(history, (1.0 - self.rms_decay) * ops.square(g) + self.rms_decay * history)
            self.assign_sub(variable, rate * g / (ops.sqrt(history) + delta))
        elif kind == "AdaDelta":
            history, update_history = slots
            self.assign(history, (1.0 - mu) * ops.square(g) + mu * history)
            update = g * ops.sqrt((update_history + delta) / (history + delta))
            self.assign(update_history, (1.0 - mu) * ops.square(update) + mu * update_history)
            self.assign_sub(variable, rate * update)
        else:
            m, v = slots
            beta2 = self.momentum2
            t = ops.cast(self.caffe_iteration() + 1, dtype)
            correction = ops.sqrt(1.0 - ops.power(beta2, t)) / (1.0 - ops.power(mu, t))
            self.assign(m, (1.0 - mu) * g + mu * m)
            self.assign(v, (1.0 - beta2) * ops.square(g) + beta2 * v)
            self.assign_sub(variable, rate * correction * m / (ops.sqrt(v) + delta))

    def get_config(self):
        config = super().get_config()
        config.pop("gradient_accumulation_steps", None)
        return {
            **config,
            "solver_type": self.solver_type,
            "momentum": self.momentum,
            "momentum2": self.momentum2,
            "delta": self.delta,
            "rms_decay": self.rms_decay,
            "decay": self.decay,
            "regularization_type": self.regularization_type,
            "clip_gradients": self.clip_gradients,
            "iter_size": self.iter_size,
            "multipliers": self.multipliers,
        }
