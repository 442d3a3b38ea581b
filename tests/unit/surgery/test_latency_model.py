"""The latency model: which groups are timed as one chain, what the chains are, the width grid, additivity."""

from __future__ import annotations

import torch

from compressor.config import PruningConfig
from compressor.models.cifar_resnet import resnet20
from compressor.models.mobilenet import mobilenet_v2
from compressor.models.vgg import vgg16_bn
from compressor.profiling.layer_latency import BlockSpec
from compressor.surgery.latency_model import LatencyModel, chain_of, grid
from compressor.surgery.plan import Rounding
from compressor.surgery.prune import analyse

from .test_latency_search import fake_time


def model_of(net, residual="internal", shape=(3, 32, 32)):
    cfg = PruningConfig(residual=residual, ratio=0.1)
    layout = analyse(net.eval(), torch.randn(1, *shape), cfg)
    return layout, LatencyModel.of_plans(layout.exact, layout.plans, Rounding.of(cfg), fake_time)


def test_a_residual_block_inner_group_is_timed_as_its_two_convs():
    layout, model = model_of(resnet20(shortcut="A"))
    assert len(model.blocks) == len(layout.plans)  # every internal group is one conv -> one conv
    key = "layer2.1.conv1"
    block = chain_of(layout.exact, model.specs, model.touching[key], key)(8)
    assert isinstance(block, BlockSpec)
    (producer,), (consumer,) = block.stem, block.heads
    assert (producer.cin, producer.cout, producer.in_hw) == (32, 8, (16, 16))
    assert (consumer.cin, consumer.cout, block.pools) == (8, 32, (1,))


def test_vgg_chains_cross_max_pools_and_the_head_group_falls_back_to_layers():
    layout, model = model_of(vgg16_bn())
    pooled = [k for k in model.blocks if chain_of(layout.exact, model.specs, model.touching[k], k)(16).pools[0] == 2]
    assert len(pooled) == 4  # four max-pools between convs
    (last,) = [p.info.key for p in layout.plans if p.info.key not in model.blocks]  # costed per layer:
    assert any(layout.exact.layers[n].shape["kind"] == "linear" for n in model.touching[last])  # it feeds the head


def test_inverted_residual_chains_run_through_the_depthwise_conv():
    layout, model = model_of(mobilenet_v2(num_classes=10, width_mult=0.35, stem_stride=1))
    chained = [k for k in model.blocks if len(chain_of(layout.exact, model.specs, model.touching[k], k)(8).stem) == 2]
    assert chained  # expand 1x1 -> depthwise 3x3 -> project 1x1
    block = chain_of(layout.exact, model.specs, model.touching[chained[0]], chained[0])(8)
    assert block.stem[1].groups == 8 and block.stem[1].depthwise


def test_the_model_is_the_base_plus_each_groups_change():
    layout, model = model_of(resnet20(shortcut="A"))
    keys = [p.info.key for p in layout.plans]
    kept = {keys[0]: 8, keys[5]: 16}
    expected = model.base_ms + sum(model.curves[k].at(w) - model.curves[k].at(layout.exact.channels[k])
                                   for k, w in kept.items())
    assert model.ms(kept) == expected
    assert model.ms({}) == model.base_ms
    assert model.ms(kept) < model.base_ms


def test_the_grid_is_dense_for_narrow_groups_and_sparse_for_wide_ones():
    assert grid(list(range(1, 17))) == list(range(1, 17))
    wide = grid(list(range(1, 513)))
    assert len(wide) == 68 and wide[-1] == 512 and 1 in wide
    assert all(w <= 16 or w % 4 == 0 for w in wide)
    assert grid(list(range(8, 65, 8))) == list(range(8, 65, 8))  # round_to 8: its ladder, on the grid
    assert grid([3, 6, 9, 12, 15, 18, 21, 24]) == [3, 6, 9, 12, 15, 24]  # min and full width kept
