"""Coupled channels: the dependency graph that channel pruning and `shrink` edit.

Every layer that makes new channels (a `Dense` or convolution, a model input, a
layer the graph cannot map) opens a *space* of channel indices. Each tensor of the
model's graph carries a `Layout`: the spaces its channel axis is made of, in
order (a `Concatenate` joins layouts; a `DepthwiseConv2D` with
`depth_multiplier=m` repeats each channel m times; a `Flatten` spreads them over
positions; a grouped convolution's output is `groups` copies of one space).
Elementwise merges (`Add`, `Multiply`, ... and raw `keras.ops` such as
`x + 3.0`) make their inputs' spaces one: a union-find over spaces. A class
of spaces is a *channel group*: channel j of it is one channel of every tensor
that carries it, and removing it cuts the same index from every member, as
DepGraph (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023)
groups PyTorch layers.

One handler per layer type (the `channels` of its `layer_types` entry) says
how a layer reads and writes channels and how its weights are cut. A space
that reaches a model output, a model input, or a layer no handler maps, cannot
lose channels; the reason is kept in words a `ValueError` or a report can quote.

Removing channel j of a group is exact when every layer that *reads* it (its
consumers: `Dense`/convolution rows) has zero weights for it: then nothing
downstream sees its value, whatever it is (also at a `padding="same"` border).
`prune(..., granularity="channel")` masks exactly those rows (and the channel's
filters), so the masked model and the shrunk one compute the same outputs.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_compact import _keras_private, layer_types
from keras_compact._cloning import as_functional, check_model, is_graph_model
from keras_compact.layers.targeted_dropout import TRANSPOSED_LAYERS, kernel_of
from keras_compact.pruning import _graph
from keras_compact.pruning._layout import Layout, Segment


@dataclasses.dataclass
class Member:
    """One layer of the graph that a group's channels touch: the layouts of its
    (first) input and its output, and the handler that cuts it."""

    layer: keras.layers.Layer
    kind: str
    inputs: Layout
    output: Layout
    input_tensor: object = None
    wrapper: keras.layers.Layer = None
    rows: Layout = None  # what the kernel's input axis reads, where it is not `inputs` (see `_separable`)
    matrices: tuple = ()  # for the kinds of `_sequence`: each weight as a `Matrix`

    def __post_init__(self):
        if self.rows is None:
            self.rows = self.inputs

    def layouts(self):
        """Every layout the member's weights or configuration follow."""
        found = [self.inputs, self.output]
        for matrix in self.matrices:
            found += [layout for layout in (matrix.rows, matrix.columns) if layout is not None]
        return found


@dataclasses.dataclass
class ChannelGroup:
    """Channels that must be removed together.

    `size` channels; `producers` the layers that compute them (a residual stage
    has several); `members` every layer whose weights or configuration a removed
    channel changes; `reason` why the group cannot be pruned (None when it can);
    `of` what one index is: `"channels"`, or `"heads"` for the heads of a
    `MultiHeadAttention` (the key/value heads of a `GroupedQueryAttention`).
    """

    size: int
    producers: tuple
    members: tuple
    reason: str = None
    root: int = dataclasses.field(default=None, repr=False)
    of: str = "channels"

    @property
    def prunable(self):
        return self.reason is None


class ChannelGroups:
    """The channel groups of a model (`channel_groups(model)`).

    Iterating gives every `ChannelGroup`; `prunable` the ones that can lose
    channels, `blocked` `{layer name: reason}` for every layer with weights whose
    output channels cannot be pruned. `print(groups)` lists both.
    """

    def __init__(self, graph):
        self._graph = graph
        self.groups = graph.groups()

    def __iter__(self):
        return iter(self.groups)

    def __len__(self):
        return len(self.groups)

    @property
    def prunable(self):
        return [group for group in self.groups if group.prunable]

    @property
    def blocked(self):
        return {name: group.reason for group in self.groups if not group.prunable for name in group.producers
                if name in self._graph.weighted}

    def group_of(self, layer_name):
        """The group of the channels `layer_name` computes, or None."""
        return next((group for group in self.groups if layer_name in group.producers), None)

    @property
    def prunable_fraction(self):
        """The fraction of the channels computed by `Dense`/convolution layers that lie in prunable groups."""
        sizes = [(group.size * sum(name in self._graph.weighted for name in group.producers), group.prunable)
                 for group in self.groups]
        total = sum(size for size, _ in sizes)
        return sum(size for size, prunable in sizes if prunable) / total if total else 0.0

    def __str__(self):
        rows = [f"{len(self.prunable)} prunable channel groups of {len(self.groups)} "
                f"({self.prunable_fraction:.0%} of computed channels)", "",
                "| group | channels | producers | members |", "|---|---|---|---|"]
        for index, group in enumerate(self.prunable):
            size = group.size if group.of == "channels" else f"{group.size} {group.of}"
            rows.append(f"| {index} | {size} | {_names(group.producers)} | {len(group.members)} |")
        blocked = self.blocked
        if blocked:
            rows += ["", "| layer | cannot be pruned because |", "|---|---|"]
            rows += [f"| {name} | {reason} |" for name, reason in blocked.items()]
        return "\n".join(rows)

    def _repr_markdown_(self):
        return str(self)


def _names(names, most=4):
    shown = ", ".join(names[:most])
    return shown + (f" (+{len(names) - most} more)" if len(names) > most else "")


def channel_groups(model, ignored_layers=None):
    """The coupled channels of `model`: what channel pruning can remove, and what not.

    Reads the model's own graph (functional or Sequential, no tracing) and groups
    every set of channels that must be removed together: the outputs of layers
    joined by a residual `Add` (or `Subtract`, `Multiply`, `Average`, `Maximum`,
    `Minimum`, or a raw `keras.ops` sum such as MobileNetV3's hard sigmoid), a
    `DepthwiseConv2D` or `SeparableConv1D`/`2D` and the channels it reads (each
    repeated `depth_multiplier` times), the slices of a grouped convolution
    (`groups=g`: channel j of every slice is one channel, so each group keeps as
    many as the others), a squeeze-and-excitation gate and the feature map it
    scales, the slices of a `Concatenate`, and each channel's
    `BatchNormalization` or `Normalization` statistics, activations, pooling,
    padding, dropout, `Flatten` and `Reshape` on the way. `Dense`, `Conv1D`,
    `Conv2D`, `Conv3D` and the transposed convolutions make new channels.
    Channels that reach a model output, come from a model input, or pass a
    layer the graph cannot map (a `Lambda`, a `LayerNormalization` over the
    channels, a nested subclassed model, a layer in `ignored_layers`) cannot be
    pruned, and the group says why. Nested functional and Sequential models (a
    `keras.applications` backbone under a new head) are read through: their
    channels join the groups of the layers around them.

    Args:
        model: a functional or Sequential model.
        ignored_layers: names of layers whose weights pruning must leave as they
            are: every group they touch is kept whole.

    Returns:
        A `ChannelGroups`: iterate it, or `print` it for a table.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    >>> y = keras.layers.Conv2D(16, 3, padding="same", name="branch")(x)
    >>> x = keras.layers.Add()([x, y])
    >>> outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    >>> groups = channel_groups(keras.Model(inputs, outputs))
    >>> [(group.size, group.producers) for group in groups.prunable]
    [(16, ('stem', 'branch'))]
    """
    check_model(model, "channel_groups")
    return ChannelGroups(analyse(model, ignored_layers))


def analyse(model, ignored_layers=None):
    """The `_Graph` of `model` (wrappers seen through)."""
    return _Graph(model, ignored_layers)


class _Graph:
    """Spaces, their union-find, every tensor's layout and every member layer."""

    def __init__(self, model, ignored_layers=None):
        if not is_graph_model(model):
            as_functional(model)  # a ValueError saying how to give the model known inputs
            raise ValueError(
                f"Channel pruning reads a model's graph; {model.name!r} is a subclassed "
                f"{type(model).__name__}. Build it as a functional or Sequential model (or wrap it: "
                "inputs = keras.Input(shape); keras.Model(inputs, model(inputs)))."
            )
        self.model = as_functional(model)
        self.sizes, self.reasons, self.origins, self.parent, self.kinds = [], [], [], [], []
        self.layouts, self.members, self.weighted, self.parts, self._groups = {}, [], set(), {}, None
        names = {layer.name for layer in _keras_private.sublayers(self.model, include_self=False)}
        names |= {_graph.unwrapped(node.operation).name for node in _nodes(self.model)}
        self._visit_graph(self.model, _check_ignored(ignored_layers, names, model), outer=True)
        for tensor in keras.tree.flatten(self.model.outputs):
            for segment in self.resolve(self.layouts[id(tensor)]).segments:  # the reason that matters most
                self.reasons[self.find(segment.space)] = "its channels are a model output"

    def _visit_graph(self, graph, ignored, outer):
        """Visits `graph`'s nodes in order; a nested model's input layouts are already set."""
        calls = {}
        for node in _nodes(graph):
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for node in _nodes(graph):
            if outer or not isinstance(node.operation, keras.layers.InputLayer):
                self._visit(node, ignored, calls[id(node.operation)])

    def _nested(self, node, layer, inputs, ignored):
        """A Functional or Sequential model called once inside the graph: its own nodes, on the
        layouts of the tensors it is called on (a backbone's channels join the head's groups)."""
        inner = as_functional(layer)
        if len(inner.inputs) != len(inputs) or len(node.outputs) != len(keras.tree.flatten(inner.outputs)):
            return False
        for tensor, layout in zip(inner.inputs, inputs):
            self.layouts[id(tensor)] = layout
        self._visit_graph(inner, ignored, outer=False)
        for outer, tensor in zip(node.outputs, keras.tree.flatten(inner.outputs)):
            self.layouts[id(outer)] = self.layouts[id(tensor)]
        return True

    # Spaces and their classes.
    def new_space(self, size, origin, reason=None, of="channels"):
        self.sizes.append(size)
        self.reasons.append(reason)
        self.origins.append(origin)
        self.kinds.append(of)
        self.parent.append(len(self.parent))
        return Layout((Segment(len(self.sizes) - 1, 0, size),))

    def find(self, space):
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.reasons[a] = self.reasons[a] or self.reasons[b]

    def block(self, layout, reason):
        for segment in self.resolve(layout).segments:
            root = self.find(segment.space)
            self.reasons[root] = self.reasons[root] or reason

    # Visiting the graph.
    def _visit(self, node, ignored, calls):
        operation = node.operation
        layer = _graph.unwrapped(operation)
        inputs = [self.resolve(self.layouts[id(t)]) for t in node.arguments.keras_tensors]
        outputs = node.outputs
        described = f"{type(layer).__name__} {layer.name!r}"
        if isinstance(layer, keras.layers.Layer) and any(w.name in ("kernel", "embeddings") for w in layer.weights):
            self.weighted.add(layer.name)
        if isinstance(operation, keras.layers.InputLayer):
            self._opaque(outputs, [], described, "a model input")
            return
        reason = None
        if calls > 1:
            reason = f"{described} is called {calls} times"
        elif layer.name in ignored:
            reason = f"{layer.name!r} is in ignored_layers"
        elif any(_channels(t) is None for t in list(node.arguments.keras_tensors) + list(outputs)
                 if keras.backend.is_float_dtype(t.dtype)):  # ids and masks of unknown length carry no channels
            reason = f"{described} has a tensor whose channel axis is unknown"
        elif is_graph_model(layer) and self._nested(node, layer, inputs, ignored):
            return
        handler = None if reason else _handler(layer)
        if handler is None:
            reason = reason or _why_unmapped(layer)
            self._opaque(outputs, inputs, described, reason)
            return
        result = handler(self, node, layer, inputs)
        if isinstance(result, str):
            self._opaque(outputs, inputs, described, result)
            return
        kind, output, *rows = result
        if kind != "pass" and kind != "merge":
            tensors = node.arguments.keras_tensors
            self.members.append(Member(layer, kind, inputs[0], output, tensors[0], operation, *rows))
        self.layouts[id(outputs[0])] = output

    def _opaque(self, outputs, inputs, described, reason):
        """Blocks the inputs' channels; each output opens a space that cannot be pruned."""
        for layout in inputs:
            self.block(layout, reason)
        for tensor in outputs:
            self.layouts[id(tensor)] = self.new_space(_channels(tensor) or 0, described, reason)

    def align(self, layouts, described):
        """Makes the channels of elementwise-merged `layouts` one (splitting spaces where the
        other side is a concatenation); blocks them when it cannot."""
        wide = [self.resolve(layout) for layout in layouts if layout.width * layout.positions > 1]
        if not wide:
            return layouts[0]
        first = wide[0]
        for other in wide[1:]:
            pair = self._refined(first, other)
            if pair is None:
                for layout in wide:
                    self.block(layout, f"{described} merges channels from differently made slices")
                return first
            first, other = pair
            for a, b in zip(first.segments, other.segments):
                self.union(a.space, b.space)
        return first

    def resolve(self, layout):
        """`layout` with every split space replaced by its parts."""
        if not self.parts or not any(s.space in self.parts for s in layout.segments):
            return layout
        segments = []
        for segment in layout.segments:
            if segment.space in self.parts:
                inner = self.resolve(Layout(tuple(Segment(part, 0, self.sizes[part], segment.repeat)
                                                  for part in self.parts[segment.space])))
                segments.extend(inner.segments)
            else:
                segments.append(segment)
        return Layout(tuple(segments), layout.positions)

    def _refined(self, a, b):
        """`a` and `b` cut at the same channel boundaries (their spaces split), or None where they
        cannot be (other positions, or a cut inside a depthwise-repeated channel)."""
        if a.positions != b.positions or a.width != b.width:
            return None
        bounds = set(_bounds(a)) | set(_bounds(b))
        if not (self._cut(a, bounds) and self._cut(b, bounds)):
            return None
        a, b = self.resolve(a), self.resolve(b)
        if len(a.segments) != len(b.segments) or any(
            (x.stop - x.start, x.repeat) != (y.stop - y.start, y.repeat) for x, y in zip(a.segments, b.segments)
        ):
            return None
        return a, b

    def _cut(self, layout, bounds):
        """Splits `layout`'s spaces so that a segment ends at each of the channel-axis widths
        `bounds`; False where one falls inside a depthwise-repeated channel."""
        offset = 0
        for segment in layout.segments:
            width = (segment.stop - segment.start) * segment.repeat
            inside = sorted(bound - offset for bound in bounds if offset < bound < offset + width)
            if inside and not self._split(segment, inside):
                return False
            offset += width
        return True

    def slices(self, layout, count):
        """`layout` cut into `count` equal slices of its channel axis (a grouped
        convolution's groups), or None where it cannot be."""
        if layout.positions != 1 or layout.width % count:
            return None
        step = layout.width // count
        if not self._cut(layout, set(range(step, layout.width, step))):
            return None
        found, current, width = [], [], 0
        for segment in self.resolve(layout).segments:
            current.append(segment)
            width += (segment.stop - segment.start) * segment.repeat
            if width % step == 0:
                found.append(Layout(tuple(current)))
                current = []
        return found

    def _split(self, segment, cuts):
        """Splits `segment`'s space, and every space joined to it, at channel widths `cuts`."""
        if any(cut % segment.repeat for cut in cuts):
            return False
        root = self.find(segment.space)
        joined = [space for space in range(len(self.sizes)) if space not in self.parts and self.find(space) == root]
        edges = [0] + [cut // segment.repeat for cut in cuts] + [self.sizes[root]]
        for space in joined:
            self.parts[space] = [self.new_space(stop - start, self.origins[space], self.reasons[root],
                                                self.kinds[space]).segments[0].space
                                 for start, stop in zip(edges, edges[1:])]
        for space in joined[1:]:
            for part, first in zip(self.parts[space], self.parts[joined[0]]):
                self.union(first, part)
        return True

    # What the groups are (the graph is final once built: computed once).
    def groups(self):
        if self._groups is None:
            self._groups = self._find_groups()
        return self._groups

    def _find_groups(self):
        roots = {}
        for space in range(len(self.sizes)):
            roots.setdefault(self.find(space), []).append(space)
        producers = {}
        for space, origin in enumerate(self.origins):
            producers.setdefault(self.find(space), []).append(origin)
        touched = {}
        for member in self.members:
            for layout in member.layouts():
                for segment in self.resolve(layout).segments:
                    touched.setdefault(self.find(segment.space), []).append(member.layer.name)
        found = []
        for root, spaces in roots.items():
            if self.sizes[root] == 0 or any(space in self.parts for space in spaces):  # split: lives on in its parts
                continue
            found.append(ChannelGroup(
                size=self.sizes[root],
                producers=tuple(dict.fromkeys(_origin_name(o) for o in producers[root])),
                members=tuple(dict.fromkeys(touched.get(root, []))),
                reason=self.reasons[root],
                root=root,
                of=self.kinds[root],
            ))
        return found

    def addresses(self, layout):
        """`(roots, channels)`: for each index of `layout`'s channel axis, its group root and channel."""
        layout = self.resolve(layout)
        roots, channels = [], []
        for segment in layout.segments:
            indices = np.repeat(np.arange(segment.start, segment.stop), segment.repeat)
            roots.append(np.full(len(indices), self.find(segment.space)))
            channels.append(indices)
        roots, channels = np.concatenate(roots), np.concatenate(channels)
        return np.tile(roots, layout.positions), np.tile(channels, layout.positions)

    def kept(self, layout, keep):
        """Bool over `layout`'s channel axis: the indices whose channel `keep[root]` keeps."""
        roots, channels = self.addresses(layout)
        result = np.ones(len(roots), bool)
        for root in np.unique(roots):
            if root in keep:
                at = roots == root
                result[at] = keep[root][channels[at]]
        return result


def _bounds(layout):
    """The channel-axis widths at which `layout`'s segments end."""
    bounds, offset = [], 0
    for segment in layout.segments:
        offset += (segment.stop - segment.start) * segment.repeat
        bounds.append(offset)
    return bounds


def _nodes(graph):
    """`graph`'s nodes, inputs first."""
    return _keras_private.nodes_in_order(graph)


def _origin_name(origin):
    """A space's origin is `"Type 'name'"`; the name alone."""
    return origin.split("'")[1] if "'" in origin else origin


def _check_ignored(ignored_layers, names, model):
    if ignored_layers is None:
        return set()
    if isinstance(ignored_layers, str) or not all(isinstance(name, str) for name in ignored_layers):
        raise ValueError(
            f"ignored_layers must be a list of layer names. Received: ignored_layers={ignored_layers!r}"
        )
    unknown = sorted(set(ignored_layers) - names)
    if unknown:
        raise ValueError(
            f"ignored_layers names layers that {model.name!r} does not have: {unknown}. "
            f"Received: ignored_layers={ignored_layers!r}"
        )
    return set(ignored_layers)


def _channels(tensor):
    shape = getattr(tensor, "shape", None)
    if not shape:
        return 1
    return shape[-1]


# The handlers: handler(graph, node, layer, input layouts) -> (kind, output layout), or a reason.
def _producer(graph, node, layer, inputs):
    """Dense and convolutions (also transposed): a new space of output channels. A grouped
    convolution's `groups` slices of input share channel indices (channel j of each is
    read by kernel row j), and its output is `groups` copies of one space, so every group
    keeps as many channels as the others (what Torch-Pruning does for grouped convs)."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"{layer.name!r} is channels_first; only channels_last layers are pruned by channel"
    if inputs[0].positions > 1 and not isinstance(layer, keras.layers.Dense):
        return f"channels are flattened into {type(layer).__name__} {layer.name!r}"
    described = f"{type(layer).__name__} {layer.name!r}"
    groups = getattr(layer, "groups", 1)
    rows = inputs[0]
    if groups > 1:
        slices = graph.slices(inputs[0], groups)
        if slices is None:
            return f"{described} splits its input into {groups} groups across depthwise-repeated channels"
        rows = graph.align(slices, described)
    output = graph.new_space(_channels(node.outputs[0]) // groups, described)
    output = Layout(output.segments * groups)
    if not _graph._elementwise(layer.activation):
        graph.block(output, f"the activation of {layer.name!r} mixes its channels")
    return ("dense" if isinstance(layer, keras.layers.Dense) else "conv"), output, rows


def _separable(graph, node, layer, inputs):
    """A separable convolution: its depthwise step repeats each input channel
    `depth_multiplier` times, which its pointwise kernel's rows read (`Member.rows`)."""
    if layer.data_format != "channels_last":
        return f"{layer.name!r} is channels_first; only channels_last layers are pruned by channel"
    if inputs[0].positions > 1:
        return f"channels are flattened into {layer.name!r}"
    multiplier = layer.depth_multiplier
    rows = Layout(tuple(dataclasses.replace(s, repeat=s.repeat * multiplier) for s in inputs[0].segments))
    output = graph.new_space(_channels(node.outputs[0]), f"{type(layer).__name__} {layer.name!r}")
    if not _graph._elementwise(layer.activation):
        graph.block(output, f"the activation of {layer.name!r} mixes its channels")
    return "separable", output, rows


def _depthwise(graph, node, layer, inputs):
    if layer.data_format != "channels_last":
        return f"{layer.name!r} is channels_first; only channels_last layers are pruned by channel"
    if inputs[0].positions > 1:
        return f"channels are flattened into {layer.name!r}"
    if not _graph._elementwise(layer.activation):
        return f"the activation of {layer.name!r} mixes its channels"
    multiplier = layer.depth_multiplier
    output = Layout(tuple(dataclasses.replace(s, repeat=s.repeat * multiplier) for s in inputs[0].segments))
    return "depthwise", output


def _batch_norm(graph, node, layer, inputs):
    rank = len(node.arguments.keras_tensors[0].shape)
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if [axis % rank for axis in axes] != [rank - 1] or inputs[0].positions > 1:
        return f"{layer.name!r} normalises axis {layer.axis}, not the channels"
    return "batchnorm", inputs[0]


def _normalization(graph, node, layer, inputs):
    rank = len(node.arguments.keras_tensors[0].shape)
    if [axis % rank for axis in layer.axis] != [rank - 1] or inputs[0].positions > 1:
        return f"{layer.name!r} normalises axis {layer.axis}, not the channels"
    return "normalization", inputs[0]


def _prelu(graph, node, layer, inputs):
    rank = len(node.arguments.keras_tensors[0].shape)
    shared = set(layer.shared_axes or ())
    if inputs[0].positions > 1 or (rank - 1) in shared:
        return f"{layer.name!r} shares its slopes across the channels"
    return "prelu", inputs[0]


def _channelwise(graph, node, layer, inputs):
    if getattr(layer, "data_format", "channels_last") not in ("channels_last", None):
        return f"{layer.name!r} is channels_first; only channels_last layers are pruned by channel"
    if inputs[0].positions > 1 and not layer_types.lookup(layer).elementwise:
        return f"channels are flattened into {type(layer).__name__} {layer.name!r}"
    if isinstance(layer, keras.layers.Activation) and not _graph._elementwise(layer.activation):
        return f"the activation of {layer.name!r} mixes its channels"
    if isinstance(layer, keras.layers.Softmax):
        rank = len(node.arguments.keras_tensors[0].shape)
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if any(axis % rank == rank - 1 for axis in axes):
            return f"{layer.name!r} is a softmax over the channels"
    if isinstance(layer, keras.layers.Rescaling) and (np.size(layer.scale) > 1 or np.size(layer.offset) > 1):
        return f"{layer.name!r} rescales each channel by its own factor"
    return "pass", inputs[0]


def _flatten(graph, node, layer, inputs):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"{layer.name!r} is channels_first; only channels_last layers are pruned by channel"
    shape = node.arguments.keras_tensors[0].shape[1:-1]
    if any(size is None for size in shape):
        return f"{layer.name!r} flattens an unknown shape"
    return "pass", dataclasses.replace(inputs[0], positions=inputs[0].positions * math.prod(shape))


def _reshape(graph, node, layer, inputs):
    source, target = node.arguments.keras_tensors[0].shape, node.outputs[0].shape
    if inputs[0].positions == 1 and source[-1] == target[-1]:
        return "reshape", inputs[0]  # positions rearranged, channels untouched
    if len(target) == 2 and all(size is not None for size in source[1:]):
        return "reshape", dataclasses.replace(inputs[0], positions=inputs[0].positions * math.prod(source[1:-1]))
    return f"{layer.name!r} reshapes {tuple(source[1:])} to {tuple(target[1:])}, mixing channels and positions"


def _merge(graph, node, layer, inputs):
    return "merge", graph.align(inputs, f"{type(layer).__name__} {layer.name!r}")


def _concatenate(graph, node, layer, inputs):
    rank = len(node.outputs[0].shape)
    if layer.axis % rank != rank - 1:
        return "merge", graph.align(inputs, f"{type(layer).__name__} {layer.name!r}")
    if any(layout.positions > 1 for layout in inputs):
        return f"{layer.name!r} concatenates flattened channels"
    return "pass", Layout(tuple(segment for layout in inputs for segment in layout.segments))


def _raw_op(graph, node, layer, inputs):
    """A `keras.ops` call in the graph (`x + 3.0`): elementwise ones only."""
    constants = [value for value in keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
                 if not isinstance(value, keras.KerasTensor)]
    if type(layer).__name__ not in _ELEMENTWISE_OPS or any(
        isinstance(value, (np.ndarray, list, tuple)) and np.size(value) > 1 for value in constants
    ):
        return _why_unmapped(layer)
    if len(inputs) == 1:
        return "pass", inputs[0]
    return _merge(graph, node, layer, inputs)


_ELEMENTWISE_OPS = {
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power", "Relu", "Relu6",
    "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Tanh", "Gelu", "Elu", "Selu", "LeakyRelu", "Softplus",
    "Softsign", "Exp", "Log", "Log1p", "Expm1", "Abs", "Absolute", "Negative", "Square", "Sqrt", "Clip", "Cast",
    "Sign", "Reciprocal", "Mish", "Celu", "HardTanh", "Floor", "Ceil", "Round",
}
def _handler(layer):
    if not isinstance(layer, keras.layers.Layer):
        return _raw_op
    if isinstance(layer, keras.Model):
        return None
    return layer_types.lookup(layer).channels


def _why_unmapped(layer):
    described = f"{type(layer).__name__} {layer.name!r}"
    if isinstance(layer, keras.Model):
        return f"{described} is a nested subclassed model; the graph cannot see inside it"
    if isinstance(layer, (keras.layers.LayerNormalization, keras.layers.GroupNormalization,
                          keras.layers.UnitNormalization)):
        return f"{described} normalises over the channels, so removing one changes the others"
    return f"{described} mixes channels in a way the graph cannot map"


# Editing a member's weights. A *plan* maps group roots to the channels each keeps:
# old channel indices in their new order, -1 for a new channel (`grow`).
def sources(graph, layout, plan):
    """For each index of `layout`'s channel axis after `plan`: its old index, or -1 where it is new."""
    layout = graph.resolve(layout)
    parts, width = [], 0
    for segment in layout.segments:
        channels = plan.get(graph.find(segment.space), np.arange(segment.start, segment.stop))
        repeated = channels[:, None] * segment.repeat + np.arange(segment.repeat)
        parts.append(np.where(channels[:, None] >= 0, width + repeated, -1).ravel())
        width += (segment.stop - segment.start) * segment.repeat
    inner = np.concatenate(parts)
    return np.concatenate([np.where(inner >= 0, p * width + inner, -1) for p in range(layout.positions)])


def _take(value, axis, source, fill):
    """`value` with `axis` indexed by `source`; entries at -1 from `fill(shape)`."""
    result = np.take(value, np.maximum(source, 0), axis=axis)
    new = source < 0
    if new.any():
        where = [slice(None)] * value.ndim
        where[axis] = new
        shape = list(result.shape)
        shape[axis] = int(new.sum())
        result[tuple(where)] = np.asarray(keras.ops.convert_to_numpy(fill(tuple(shape))), value.dtype)
    return result


def _zeros(shape):
    return np.zeros(shape)


def standard(kernel, layer):
    """`kernel` (NumPy) with its input channels on axis -2 and its outputs on -1: a transposed
    convolution's `[..., filters, in]` swapped (its own inverse)."""
    return np.swapaxes(kernel, -1, -2) if isinstance(layer, TRANSPOSED_LAYERS) else kernel


def _cut_kernel(layer, values, source_in, source_out):
    kernel = _take(standard(values[0], layer), -2, source_in, _zeros)  # a new input channel is read with zeros
    kernel = standard(_take(kernel, -1, source_out, _transposed(layer.kernel_initializer, layer)), layer)
    return [kernel] + [_take(bias, 0, source_out, layer.bias_initializer) for bias in values[1:]]


def _transposed(initializer, layer):
    """`initializer` for a new slice of `standard(kernel)`: drawn in the kernel's own shape."""
    if not isinstance(layer, TRANSPOSED_LAYERS):
        return initializer
    return lambda shape: np.swapaxes(keras.ops.convert_to_numpy(initializer(shape[:-2] + shape[-1:] + shape[-2:-1])),
                                     -1, -2)


def _cut_separable(layer, values, source_rows, source_out):
    """Depthwise kernel `[..., in, multiplier]` by input channel; pointwise `[..., in * multiplier,
    filters]` by row and filter."""
    multiplier = layer.depth_multiplier
    first = source_rows[::multiplier]
    source_in = np.where(first >= 0, first // multiplier, -1)
    depthwise = _take(values[0], -2, source_in, layer.depthwise_initializer)
    pointwise = _take(values[1], -2, source_rows, _zeros)
    pointwise = _take(pointwise, -1, source_out, layer.pointwise_initializer)
    return [depthwise, pointwise] + [_take(bias, 0, source_out, layer.bias_initializer) for bias in values[2:]]


def _cut_normalization(layer, values, source_in, source_out):
    """An adapted `Normalization`'s mean and variance by channel (its count is one number)."""
    fills = {"mean": _zeros, "variance": np.ones}
    return [_take(value, -1, source_in, fills[variable.name]) if variable.name in fills else value
            for variable, value in zip(layer.weights, values)]


def _cut_depthwise(layer, values, source_in, source_out):
    kernel = _take(values[0], -2, source_in, layer.depthwise_initializer)  # [..., input channels, multiplier]
    return [kernel] + [_take(bias, 0, source_out, layer.bias_initializer) for bias in values[1:]]


def _cut_batch_norm(layer, values, source_in, source_out):
    initializers = ([layer.gamma_initializer] if layer.scale else []) + (
        [layer.beta_initializer] if layer.center else []) + [
        layer.moving_mean_initializer, layer.moving_variance_initializer]
    return [_take(value, 0, source_in, initializer) for value, initializer in zip(values, initializers)]


def _cut_prelu(layer, values, source_in, source_out):
    return [_take(values[0], -1, source_in, layer.alpha_initializer)]


_EDITS = {
    "dense": _cut_kernel,
    "conv": _cut_kernel,
    "separable": _cut_separable,
    "depthwise": _cut_depthwise,
    "batchnorm": _cut_batch_norm,
    "normalization": _cut_normalization,
    "prelu": _cut_prelu,
}


def edit(graph, plan, weights, configs):
    """Writes into `weights`/`configs` (by layer name) every member as `plan` makes
    it: the layers `_graph.replacement` rebuilds."""
    for member in graph.members:
        if member.matrices:
            _edit_matrices(graph, member, plan, weights, configs)
            continue
        source_in = sources(graph, member.rows, plan)
        source_out = sources(graph, member.output, plan)
        if _unchanged(source_in, member.rows) and _unchanged(source_out, member.output):
            continue
        layer = member.layer
        if member.kind == "normalization" and not layer.weights:  # mean and variance given as numbers
            config = configs.setdefault(layer.name, layer.get_config())
            for key, fill in (("mean", 0.0), ("variance", 1.0)):
                if np.size(config[key]) > 1:
                    config[key] = _take(np.asarray(config[key], "float64").reshape(-1), 0, source_in,
                                        lambda shape, fill=fill: np.full(shape, fill)).tolist()
            continue
        if member.kind == "reshape":
            config = configs.setdefault(layer.name, layer.get_config())
            shape = list(config["target_shape"])
            if shape[-1] != -1:
                shape[-1] = len(source_out)
            config["target_shape"] = tuple(shape)
            continue
        values = weights.get(layer.name) or [keras.ops.convert_to_numpy(v) for v in layer.weights]
        weights[layer.name] = _EDITS[member.kind](layer, values, source_in, source_out)
        if member.kind in KERNELS:
            configs.setdefault(layer.name, layer.get_config())[
                "units" if member.kind == "dense" else "filters"] = len(source_out)


def _edit_matrices(graph, member, plan, weights, configs):
    """`edit` for a member whose weights are `Matrix` views (attention, recurrent, embedding)."""
    layer, changed = member.layer, False
    values = list(weights.get(layer.name) or [keras.ops.convert_to_numpy(v) for v in layer.weights])
    for matrix in member.matrices:
        found = [None if layout is None else sources(graph, layout, plan) for layout in (matrix.rows, matrix.columns)]
        if all(source is None or _unchanged(source, layout)
               for source, layout in zip(found, (matrix.rows, matrix.columns))):
            continue
        values[matrix.index] = matrix.cut(values[matrix.index], *found)
        changed = True
    if changed:
        weights[layer.name] = values
        layer_types.lookup(layer).resize(member, configs.setdefault(layer.name, layer.get_config()), values)


def _unchanged(source, layout):
    return len(source) == layout.width * layout.positions and bool(np.all(source == np.arange(len(source))))


def cut(graph, keep, weights, configs):
    """`edit` without the channels `keep` (`{root: bool [size]}`) drops."""
    edit(graph, {root: np.flatnonzero(kept) for root, kept in keep.items()}, weights, configs)


# The members whose kernel reads a group's channels (along `Member.rows`) and writes its filters.
KERNELS = ("dense", "conv", "separable")


def kernel_value(member):
    """The member's kernel that reads channels, as NumPy: a separable convolution's pointwise one."""
    return keras.ops.convert_to_numpy(kernel_of(member.layer))


def consumer_rows(kernel, layer=None):
    """A Dense/convolution kernel as `[input channel index, ...]` rows."""
    kernel = kernel if layer is None else standard(kernel, layer)
    return np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1)


def removable(graph):
    """`{root: bool [size]}`: the channels of prunable groups that every consumer
    reads with zero weights (at least one consumer reads the group)."""
    zero, read = {}, {}
    for layout, nonzero in _reads(graph):
        roots, channels = graph.addresses(layout)
        for root in np.unique(roots):
            if graph.reasons[root] is not None:
                continue
            at = roots == root
            size = graph.sizes[root]
            alive = np.zeros(size, bool)
            np.logical_or.at(alive, channels[at], nonzero[at])
            zero[root] = zero.get(root, np.ones(size, bool)) & ~alive
            read[root] = True
    return {root: value for root, value in zero.items() if read[root] and value.any()}


def _reads(graph):
    """`(layout, bool over it)` for every weight that reads channels: the indices it reads with a non-zero weight."""
    for member in graph.members:
        if member.kind in KERNELS:
            yield member.rows, consumer_rows(kernel_value(member), member.layer).any(axis=1)
        for matrix in member.matrices:
            if matrix.rows is not None:
                yield matrix.rows, matrix.read_rows(keras.ops.convert_to_numpy(member.layer.weights[matrix.index]))
