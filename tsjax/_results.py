r"""One vocabulary of outcomes for every engine, and errors that also work under ``jit``.

``RESULTS`` is an :class:`equinox.Enumeration` carried by every :class:`~tsjax.Trajectory`
(``traj.result``) next to ``traj.diverged_at``; ``tsjax.sweep`` stores its index as the
``status`` variable (0 successful, 1 diverged, 2 max_steps_reached, 3 solver_failure,
4 invalid_input).

``throw=True`` (the default of ``solve_ode``, ``simulate`` and ``simulate_order_params``):
a run whose result is not ``successful`` raises. Called eagerly, the error is a
:class:`~tsjax.DivergenceError` (or ``ValueError`` for an invalid input) naming the alpha at
which the run stopped. Under ``jax.jit``, ``jax.vmap`` or ``jax.grad`` the check is a host
callback on the traced result (:func:`raise_if_failed`): the error is raised when the
compiled program runs, as a ``RuntimeError`` (JAX's ``JaxRuntimeError``) whose message holds
the same text. ``throw=False`` returns the flagged trajectory instead (``result``,
``diverged_at``, NaN values from the stop on); ``tsjax.sweep`` works that way.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import invalid_traced

__all__ = ["RESULTS", "DivergenceError", "raise_if_failed", "result_index"]


class DivergenceError(RuntimeError):
    """Raised when a run diverges (typically: learning rate too large) or its solver fails."""


class RESULTS(eqx.Enumeration):
    """Outcome of a run (``Trajectory.result``; index = ``sweep``'s ``status``)."""

    successful = ""
    diverged = (
        "a student norm Q_kk (or v_k^2) exceeded max_norm times its natural "
        "scale, or a value became non-finite; the learning rate is probably too large"
    )
    max_steps_reached = "the solver reached max_steps before the last save time (raise max_steps)"
    solver_failure = (
        "the solver failed: its step size collapsed because the vector field is not finite "
        "(check a custom activation or schedule for NaN/inf values)"
    )
    invalid_input = (
        "an input was invalid where it could only be checked on traced values (a negative or "
        "non-finite learning rate, noise or weight decay, or save times that do not increase)"
    )


#: The item names in index order: ``RESULT_NAMES[i]`` is the item whose ``sweep`` status is i.
RESULT_NAMES = ("successful", "diverged", "max_steps_reached", "solver_failure", "invalid_input")
_ORDER = tuple(getattr(RESULTS, name) for name in RESULT_NAMES)


def result_index(result) -> jax.Array:
    """The integer index (int8) of a ``RESULTS`` item, elementwise under ``vmap``."""
    out = jnp.zeros((), jnp.int8)
    for i, item in enumerate(_ORDER[1:], start=1):
        out = jnp.where(result == item, jnp.int8(i), out)
    return out


def _message(who: str, index: int, at: float, bad: tuple[str, ...] = ()) -> str:
    name = RESULT_NAMES[index]
    text = RESULTS[getattr(RESULTS, name)]
    if name == "invalid_input":
        if bad:
            return (
                f"{who}: invalid {', '.join(bad)} (checked on its traced values: must be "
                f"finite and >= 0; save times finite, >= 0 and increasing; a rule's gain "
                f"finite and > 0, its feedback finite, the RL perceptron's penalty finite and "
                f">= 0, min_correct >= 1, discount in [0, 1]), at alpha = {at:.6g}"
            )
        return f"{who}: {text} (detected at alpha = {at:.6g})"
    if name == "diverged":
        return f"{who} diverged at alpha = {at:.6g}: {text}"
    return f"{who} stopped at alpha = {at:.6g} ({name}): {text}"


def failure_message(who: str, index, at, bad=None, names: tuple[str, ...] = ()) -> str | None:
    """The error message of the first failed run among (batched) ``index``/``at``, or
    None if every run succeeded. ``bad`` (..., len(names)) flags which named inputs were
    invalid."""
    index = np.asarray(index).reshape(-1)
    at = np.broadcast_to(np.asarray(at, np.float64), np.asarray(index).shape).reshape(-1)
    failed = np.flatnonzero(index != 0)
    if failed.size == 0:
        return None
    i = int(failed[0])
    which = ()
    if bad is not None and names:
        flags = np.asarray(bad).reshape(-1, len(names))
        which = tuple(n for n, f in zip(names, flags[i]) if f)
    msg = _message(who, int(index[i]), float(at[i]), which)
    if index.size > 1:
        msg += f" [batch element {i}; {failed.size} of {index.size} runs failed]"
    return msg


def _raise_on_failure(who: str, index, at, bad=None, names=()) -> None:
    """Raise for the first failed run among ``index``/``at`` (numpy values), if any."""
    msg = failure_message(who, index, at, bad, names)
    if msg is None:
        return
    idx = np.asarray(index).reshape(-1)
    first = int(idx[np.flatnonzero(idx != 0)[0]])
    raise (ValueError if RESULT_NAMES[first] == "invalid_input" else DivergenceError)(msg)


def _checked_impl(leaves, index, at, bad, who, names):
    def callback(index_, at_, bad_):
        _raise_on_failure(who, index_, at_, bad_, names)
        return np.zeros(np.shape(at_), np.asarray(at_).dtype)

    zero = jax.pure_callback(
        callback,
        jax.ShapeDtypeStruct(jnp.shape(at), jnp.result_type(at)),
        index,
        at,
        bad,
        vmap_method="broadcast_all",
    )
    # Adding the callback's zero makes every value depend on the check (so it is never
    # removed as dead code); x + 0 is x for every float, NaN included.
    return [x + zero.astype(x.dtype).reshape(()) for x in leaves]


_checked = jax.custom_jvp(_checked_impl, nondiff_argnums=(4, 5))


@_checked.defjvp
def _checked_jvp(who, names, primals, tangents):
    leaves, index, at, bad = primals
    return _checked(leaves, index, at, bad, who, names), tangents[0]


def raise_if_failed(
    traj, index, who: str, *, lr, lr_v, noise, weight_decay, alphas=None, rule=None
):
    """``traj`` (a :class:`~tsjax.Trajectory`) unchanged, after raising if ``index`` (the
    integer index of its ``RESULTS`` item, :func:`result_index`; possibly batched) is not 0
    (``successful``). ``lr``, ``lr_v`` (schedules), ``noise``, ``weight_decay`` and ``alphas``
    are the run's inputs: a failed run names those that were invalid on their traced values
    (the rates evaluated where the run stopped).

    Concrete values: raises :class:`DivergenceError` (``ValueError`` for ``invalid_input``)
    at once. Traced values (under ``jit``/``vmap``/``grad``): a host callback raises when the
    compiled program runs (JAX re-raises it as a ``RuntimeError`` holding the message);
    derivatives pass through unchanged."""
    at = traj.diverged_at
    tracer = jax.core.Tracer
    if not any(isinstance(x, tracer) for x in (index, at)) and not np.any(np.asarray(index)):
        return traj
    start = 0.0 if alphas is None else alphas[0]
    at_stop = jnp.where(jnp.isfinite(at), at, start)
    invalid = invalid_traced(
        alphas=alphas,
        at=at_stop,
        lr=lr,
        lr_v=lr_v,
        noise=noise,
        weight_decay=weight_decay,
    )
    if rule is not None:  # the learning rule's parameters (e.g. a gain beta > 0)
        invalid["rule"] = rule.bad() | rule.at(at_stop).bad()
    names = tuple(invalid)
    bad = jnp.stack([jnp.asarray(v, bool) for v in invalid.values()])
    if not any(isinstance(x, tracer) for x in (index, at, bad)):
        _raise_on_failure(who, index, at, bad, names)
        return traj
    leaves, treedef = jax.tree_util.tree_flatten(traj)
    is_float = [eqx.is_inexact_array(x) for x in leaves]
    floats = [x for x, f in zip(leaves, is_float) if f]
    # at is a scalar per run; the check's zero is a scalar per run, broadcast by vmap.
    checked = iter(_checked(floats, index, jnp.asarray(at), bad, who, names))
    leaves = [next(checked) if f else x for x, f in zip(leaves, is_float)]
    return jax.tree_util.tree_unflatten(treedef, leaves)
