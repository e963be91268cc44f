"""Cross-layer parameter sharing (ALBERT Table 4) expressed as data.

A mode names the sublayers that are shared. Building the layer list creates one instance of each shared sublayer
and hands that same instance to every layer; unshared sublayers are created afresh per layer. forward() never
looks at the mode: a shared sublayer simply appears in the list more than once.
"""

from torch import nn

from plmbench.models.config import ModelConfig
from plmbench.models.layers import TransformerLayer, attention_sublayer, ffn_sublayer

SHARED_SUBLAYERS = {
    "none": frozenset(),
    "attention": frozenset({"attention"}),
    "ffn": frozenset({"ffn"}),
    "all": frozenset({"attention", "ffn"}),
}
SUBLAYER_BUILDERS = {"attention": attention_sublayer, "ffn": ffn_sublayer}


def build_layers(config: ModelConfig) -> nn.ModuleList:
    shared = {name: SUBLAYER_BUILDERS[name](config) for name in SHARED_SUBLAYERS[config.sharing]}

    def sublayer(name: str) -> nn.Module:
        return shared[name] if name in shared else SUBLAYER_BUILDERS[name](config)

    return nn.ModuleList(
        TransformerLayer(attention=sublayer("attention"), ffn=sublayer("ffn")) for _ in range(config.num_layers))
