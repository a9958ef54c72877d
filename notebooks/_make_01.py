"""Writes notebooks/01_plateaus.ipynb (run: python notebooks/_make_01.py)."""

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s: cells.append(nbf.v4.new_code_cell(s))

md(r"""# Plateaus of the soft committee machine

The erf soft committee machine (K = M = 2, second layer fixed to v = v* = 1) learning from a
teacher of the same architecture by online SGD is the textbook example of a **plateau**
(Saad & Solla 1995; Biehl, Riegler & Wöhler 1996): after a fast initial decrease the
generalisation error gets stuck at a finite value while the student sits near an unstable,
*symmetric* fixed point where every student unit has the same overlap with every teacher
unit. Small asymmetries grow exponentially and the student eventually *specialises*: each
student unit aligns with one teacher unit and ε_g decays to zero.

This notebook compares the N → ∞ order-parameter ODE with online SGD of the real networks
at finite N (same initial conditions), and shows the order parameters R and Q during the
symmetric phase and after specialisation. Conventions: Goldt et al. (2019), g(x) = erf(x/√2),
no output scaling, first-layer step η/√N, α = steps/N.""")

code("""import os
os.environ.setdefault("EQX_ON_ERROR", "off")   # so that the ODE programs are cached too (README)
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import matplotlib.pyplot as plt
import tsjax
tsjax.enable_compilation_cache()   # compiled programs are reused by later runs

FAST = os.environ.get("TSJAX_FAST", "0") == "1"   # CI runs the notebook in a fast setting
N = 500 if FAST else 1000
SEEDS = 3 if FAST else 8
ALPHA_MAX = 300.0 if FAST else 400.0
LR = 0.5
alphas = np.linspace(0.0, ALPHA_MAX, 61 if FAST else 161)""")

md(r"""## ODE against simulation

The teacher has normalised rows (T = I); students start with i.i.d. N(0, 1) weights, so
Q ≈ I and the student–teacher overlaps are only R = O(1/√N). For each seed we integrate
the ODE from that seed's *exact* initial order parameters and run online SGD of the
networks with the same initial weights.""")

code("""key_teacher, key_students, key_sgd = jax.random.split(jax.random.key(0), 3)
teacher = tsjax.init_teacher(key_teacher, N, 2)
students = [tsjax.init_student(k, N, 2) for k in jax.random.split(key_students, SEEDS)]

ode = [tsjax.solve_ode(tsjax.order_params(s, teacher), lr=LR, alphas=alphas) for s in students]
sim = [tsjax.simulate(s, teacher, k, lr=LR, alphas=alphas)
       for s, k in zip(students, jax.random.split(key_sgd, SEEDS))]
eg_ode = np.stack([np.asarray(t.eg) for t in ode])
eg_sim = np.stack([np.asarray(t.eg) for t in sim])""")

code("""fig, ax = plt.subplots(figsize=(6.5, 4))
for i in range(SEEDS):
    ax.plot(alphas, eg_ode[i], color=f"C{i % 10}", lw=1.5,
            label="ODE (N → ∞)" if i == 0 else None)
    ax.plot(alphas[::4], eg_sim[i, ::4], "o", ms=3, color=f"C{i % 10}", alpha=0.7,
            label=f"SGD, N = {N}" if i == 0 else None)
ax.set_yscale("log")
ax.set_xlabel(r"$\\alpha$")
ax.set_ylabel(r"$\\epsilon_g$")
ax.set_title("erf soft committee machine, K = M = 2, η = 0.5 (one colour per seed)")
ax.legend()
plt.show()""")

md(r"""Each colour is one seed: the simulation follows *its* ODE curve through the initial
decay and onto the plateau. The escape time fluctuates from seed to seed: on the plateau the
dynamics amplifies the O(1/√N) noise of SGD along the unstable direction, which the
deterministic ODE does not have (the finite-N order-parameter chain of a later notebook
quantifies this). The plateau height itself is sharp:""")

code("""on_plateau = (alphas > 40) & (alphas < 100)
h_ode = eg_ode[:, on_plateau].mean()
h_sim = eg_sim[:, on_plateau].mean()
print(f"plateau height: ODE {h_ode:.5f}, simulation {h_sim:.5f} "
      f"({100 * abs(h_sim / h_ode - 1):.2f}% apart)")""")

md(r"""## Symmetric phase and specialisation

The order parameters of one seed. On the plateau all R_in are equal (the student has not
decided which unit learns which teacher) and the student–student overlap Q_12 is large; at
the escape one R_in per student unit grows to 1 and the others decay to 0 (specialisation),
and Q → T.""")

code("""t_ode, t_sim = ode[0], sim[0]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
for i in range(2):
    for n in range(2):
        c = f"C{2 * i + n}"
        axes[0].plot(alphas, t_ode.R[:, i, n], color=c, label=f"$R_{{{i+1}{n+1}}}$")
        axes[0].plot(alphas[::4], t_sim.R[::4, i, n], "o", ms=2.5, color=c)
for (k, l), c in zip([(0, 0), (1, 1), (0, 1)], ["C0", "C1", "C2"]):
    axes[1].plot(alphas, t_ode.Q[:, k, l], color=c, label=f"$Q_{{{k+1}{l+1}}}$")
    axes[1].plot(alphas[::4], t_sim.Q[::4, k, l], "o", ms=2.5, color=c)
for ax, title in zip(axes, ["student-teacher overlaps R", "student-student overlaps Q"]):
    ax.set_xlabel(r"$\\alpha$")
    ax.set_title(title + " (lines: ODE, dots: SGD)")
    ax.legend(ncol=2, fontsize=8)
plt.tight_layout()
plt.show()""")

md(r"""## The plateau length grows like log(1/R₀)

Starting closer to the symmetric subspace lengthens the plateau: the escape is driven by an
unstable mode that grows like exp(λα) from the initial asymmetry, so the escape time grows
like (1/λ) log(1/R₀). We start the ODE from Q = diag(0.5, 0.6) and student–teacher overlaps
of size R₀ with a fixed asymmetric pattern.""")

code("""def escape_time(R0):
    op0 = tsjax.OrderParams(np.diag([0.5, 0.6]), R0 * np.array([[1.0, 0.5], [0.3, 0.9]]),
                            np.eye(2), np.ones(2), np.ones(2))
    a = np.linspace(0, 1000.0, 1001)
    tr = tsjax.solve_ode(op0, lr=LR, alphas=a)
    eg = np.asarray(tr.eg)
    return a[np.argmax((eg < 1e-3) & (a > 20))], a, eg

R0s = [1e-2, 1e-4, 1e-6] if FAST else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
escapes = []
for R0 in R0s:
    t_esc, a, eg = escape_time(R0)
    escapes.append(t_esc)
    axes[0].plot(a, eg, label=f"$R_0$ = {R0:g}")
axes[0].set_yscale("log"); axes[0].set_ylim(1e-6, 1)
axes[0].set_xlabel(r"$\\alpha$"); axes[0].set_ylabel(r"$\\epsilon_g$"); axes[0].legend(fontsize=8)
axes[1].semilogx(R0s, escapes, "o-")
axes[1].set_xlabel(r"initial overlap $R_0$")
axes[1].set_ylabel(r"escape time ($\\epsilon_g < 10^{-3}$)")
slope = np.polyfit(np.log(R0s), escapes, 1)[0]
axes[1].set_title(f"escape time ≈ {-slope:.1f} · log(1/R₀) + const")
plt.tight_layout()
plt.show()""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/01_plateaus.ipynb")
