"""The engine: how EM runs, seeing models only through the structure protocol and the
statistics seam.

- `kernel`: one EM step as `(init, step)` (`em_step`, `EMState`, `EMInfo`).
- `mstep`: M-step strategies (`ClosedForm`, `Gradient`, `Statistics`).
- `fit`: `fit`, a `lax.while_loop` over the kernel, and `FitResult`.
- `restarts`: `fit_restarts`, vmapped restarts.
"""
