"""The `"obs"` channel criterion: layer-wise Optimal Brain Surgeon, channel by channel.

Which channels to remove when the layers reading them are refit afterwards
(`reconstruct=True`)? Layer-wise OBS (Dong, Chen, Pan, "Learning to Prune Deep
Neural Networks via Layer-wise Optimal Brain Surgeon", 2017; its channel form
is ThiNet's and He et al.'s question) answers with the inverse of the Gram
matrix `H` of what the readers read: removing input `i`, the others
compensating it by least squares, adds `|w_i|^2 / [H^-1]_ii` to the readers'
squared output error (`w_i`: row `i` of their kernels, every tap and output).
Per group, the channel that adds least is removed, the rows and `H^-1` are
updated for it (the surgeon's compensation and a rank-one downdate), and so on:
the order of removal is the ranking. A group's cost sums over every tensor that
carries it; the Gram matrices are measured once on the unpruned network.
"""

import keras
import numpy as np

from keras_compact._cloning import inlined
from keras_compact.pruning import _graph, _groups, _reconstruct


def scores(graph, model, x):
    """`{root: float [size]}`: the step at which the greedy surgeon removes each channel (kept longest: highest).

    Groups that no refit tensor carries once per channel (a flattened or repeated layout, a reader too wide)
    are left out: `_channel.scores` gives them magnitude.
    """
    tensors = _tensors(graph, model, x)
    roots = {group.root: group.size for group in graph.groups() if group.prunable}
    result = {}
    for root, size in roots.items():
        carrying = []
        for rows, inverse, indices_of in tensors:
            indices = indices_of.get(root)
            if indices is not None:
                carrying.append([rows, inverse, indices])
        if carrying:
            result[root] = _greedy(carrying, size)
    return result


def _tensors(graph, model, x):
    """`[(stacked reader rows, H^-1, {root: index of each channel})]` of every tensor read once per channel."""
    found = []
    for members, gram, indices_of in grams(graph, model, x):
        strength = _reconstruct.RIDGE * max(float(np.mean(np.diag(gram))), 1e-12)
        inverse = np.linalg.inv(gram + strength * np.eye(len(gram)))
        found.append((_rows(members), inverse, indices_of))
    return found


def grams(graph, model, x):
    """`[(readers, centered Gram matrix, {root: index of each channel or -1})]` of every tensor that Dense and
    convolution readers read once per channel (not flattened or repeated, at most `WIDEST` wide), on `x`."""
    readers = [members for members in _reconstruct._readers(graph)
               if _once_per_channel(graph, members[0].rows) and _width(graph, members[0].rows) <= _reconstruct.WIDEST]
    if not readers:
        return []
    unpruned, _, _ = inlined(model)
    original = {_graph.unwrapped(layer).name: layer for layer in unpruned.layers}
    probe = keras.Model(unpruned.inputs[0], [original[members[0].layer.name].input for members in readers])
    totals = [0.0] * len(readers)
    rng = np.random.default_rng(0)
    for start in range(0, len(x), _reconstruct.BATCH):
        outputs = probe(x[start : start + _reconstruct.BATCH], training=False)
        for index, value in enumerate(outputs if len(readers) > 1 else [outputs]):
            design = _reconstruct.values(value, _width(graph, readers[index][0].rows), rng)
            design = design - design.mean(axis=0)  # the refit's constant absorbs each channel's mean
            totals[index] = totals[index] + design.T @ design
    found = []
    for members, gram in zip(readers, totals):
        roots, channels = graph.addresses(members[0].rows)
        indices_of = {}
        for root in np.unique(roots):
            at = np.flatnonzero(roots == root)
            order = np.full(graph.sizes[root], -1)
            order[channels[at]] = at
            indices_of[int(root)] = order
        found.append((members, gram, indices_of))
    return found


def _width(graph, layout):
    return len(graph.addresses(layout)[0])


def _once_per_channel(graph, layout):
    layout = graph.resolve(layout)
    return layout.positions == 1 and all(segment.repeat == 1 for segment in layout.segments)


def _rows(members):
    """The readers' kernels as one `[channels, taps x outputs]` matrix."""
    rows = []
    for member in members:
        kernel = _groups.standard(keras.ops.convert_to_numpy(member.layer.kernel), member.layer).astype(np.float64)
        rows.append(np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1))
    return np.hstack(rows)


def _greedy(carrying, size):
    """The removal step of each of `size` channels (the last left gets `size`), removing the cheapest first."""
    carrying = [[rows.copy(), inverse.copy(), indices] for rows, inverse, indices in carrying]
    alive = np.ones(size, bool)
    step_of = np.full(size, float(size))
    for step in range(size - 1):
        cost = np.zeros(size)
        for rows, inverse, indices in carrying:
            present = indices >= 0
            diagonal = np.diag(inverse)[indices[present]]
            cost[present] += np.sum(rows[indices[present]] ** 2, axis=1) / np.maximum(diagonal, 1e-30)
        cost[~alive] = np.inf
        removed = int(np.argmin(cost))
        step_of[removed] = step
        alive[removed] = False
        for entry in carrying:
            rows, inverse, indices = entry
            index = indices[removed]
            if index < 0:
                continue
            column = inverse[:, index] / inverse[index, index]
            rows -= np.outer(column, rows[index])  # the others compensate the removed input
            inverse -= np.outer(column, inverse[index])
            rows[index] = 0.0
            inverse[index] = 0.0
            inverse[:, index] = 0.0
            inverse[index, index] = 1.0  # removed: its row is zero, so its cost stays zero and it is not chosen
    return step_of
