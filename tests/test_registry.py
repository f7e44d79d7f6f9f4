"""The method registry: the CLI, the server, the report and the launcher read the same entries."""

from types import SimpleNamespace

import pytest

from fedrouter import methods
from fedrouter.config import Config
from fedrouter.strategies import build_strategy


@pytest.mark.parametrize("name", methods.choices())
def test_every_name_builds_its_entrys_strategy_with_its_hooks(name):
    cfg = Config(fed_alg=name)
    entry = methods.get(name)
    assert cfg.fed_alg == entry.name  # a synonym is stored as its method's name
    strategy = build_strategy(cfg)
    assert type(strategy) is entry.strategy_class() and strategy.hooks == entry.client


def test_synonym_and_unknown_name():
    assert methods.canonical("fedrouter") == "clustered"
    with pytest.raises(ValueError, match="not implemented; valid: cfl, clustered"):
        build_strategy(SimpleNamespace(fed_alg="fedprox"))


def test_feddpa_and_oracle_differ_from_their_server_strategy_by_client_hooks():
    feddpa, fedavg = methods.get("feddpa"), methods.get("fedavg")
    assert feddpa.strategy == fedavg.strategy and feddpa.client.local_adapter
    oracle = methods.get("router_oracle").client
    assert oracle.cluster_by_task and oracle.route_by_task and not oracle.local_adapter


def test_cli_prints_names_in_launcher_order(capsys):
    methods.main([])
    assert capsys.readouterr().out.split() == list(methods.names())
    methods.main(["--canonical", "fedrouter"])
    assert capsys.readouterr().out == "clustered\n"


def test_report_reads_order_labels_and_gain_baselines_from_the_registry():
    from fedrouter import report

    assert sorted(report.METHOD_ORDER, key=report.method_key) == list(report.METHOD_ORDER)
    assert report.METHOD_ORDER[:2] == ("clustered", "router_oracle")  # FedRouter, its bound
    assert report.method_label("clustered") == "FedRouter (clustered)"
    assert report.BASELINES == {"fedavg": "FedAvg", "local": "Local"}
