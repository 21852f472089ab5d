"""The `"dpp"` channel criterion: keep a diverse set of channels (a determinantal point process).

Mariet and Sra ("Diversity Networks: Neural Network Compression Using
Determinantal Point Processes", 2016) keep the units a DPP over their
activations makes likely, sets whose activation vectors span the most volume,
then fold the work of the removed units into the kept ones' readers (here:
`reconstruct=True`). The kernel here is linear, the Gram matrix of each
channel's centered activations on the data (the paper's is a Gaussian of
their distances): the readers' refit absorbs a channel's mean, and a channel's
scale is what its readers see, so a weak or dead channel goes first. A group
carried by several tensors sums their Gram matrices. The ranking is the order in
which the DPP's most likely sets grow (greedy MAP, by pivoted Cholesky: each
time the channel the chosen ones explain least), not a random sample, so the
channels kept at 30% are among those kept at 10%, and runs agree.
"""

import numpy as np

from keras_compact.pruning import _obs


def scores(graph, model, x):
    """`{root: float [size]}`: `size` for the channel chosen first, down to 1 for the last (pruned first).

    Groups no tensor carries once per channel are left out (magnitude, as for `"obs"`)."""
    roots = {group.root: group.size for group in graph.groups() if group.prunable}
    kernels = {}
    for _, gram, indices_of in _obs.grams(graph, model, x):
        for root, indices in indices_of.items():
            if root not in roots:
                continue
            present = np.flatnonzero(indices >= 0)  # a tensor may carry part of a group (a concatenation)
            kernel = kernels.setdefault(root, np.zeros((roots[root], roots[root])))
            kernel[np.ix_(present, present)] += gram[np.ix_(indices[present], indices[present])]
    return {root: _greedy_order(kernel) for root, kernel in kernels.items()}


def _greedy_order(kernel):
    """Greedy MAP of the DPP with `kernel`: each channel's score, `size` for the first chosen."""
    size = len(kernel)
    residual = np.diag(kernel).astype(np.float64).copy()
    floor = 1e-12 * max(float(residual.max()), 1e-30)
    factors = np.zeros((size, size))
    alive = np.ones(size, bool)
    score = np.zeros(size)
    for step in range(size):
        candidates = np.where(alive, residual, -np.inf)
        chosen = int(np.argmax(candidates))
        score[chosen] = size - step
        alive[chosen] = False
        if residual[chosen] <= floor:  # the rest lie in the span of the chosen: by their own variance
            rest = np.flatnonzero(alive)
            order = rest[np.argsort(-np.diag(kernel)[rest], kind="stable")]
            score[order] = size - step - 1 - np.arange(len(order))
            break
        column = (kernel[:, chosen] - factors[:, :step] @ factors[chosen, :step]) / np.sqrt(residual[chosen])
        factors[:, step] = column
        residual = np.maximum(residual - column**2, 0.0)
    return score
