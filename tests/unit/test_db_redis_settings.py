"""Redis URLs (standalone, Sentinel, Cluster), the clients built from them, error translation and
command validation, without a network."""

from __future__ import annotations

import grpc
import pytest
from paca.db.v1 import key_value_service_pb2 as pb
from redis import exceptions as redis_errors

from db_service.keyvalue import KeyValueSettings, RedisDatabaseSettings, RedisTarget
from db_service.keyvalue.clients import make_clients
from db_service.keyvalue.commands import build
from db_service.keyvalue.errors import translate
from db_service.keyvalue.stats import CommandStats
from paca_runtime.errors import InvalidArgument, StatusError
from paca_runtime.settings import SettingsError, SettingsSource

pytestmark = pytest.mark.unit


def test_standalone_url_with_database_and_tls() -> None:
    target = RedisTarget.parse("rediss://app:s3cret@cache.example:6380/4")
    assert (target.mode, target.hosts, target.db, target.tls) == (
        "standalone",
        (("cache.example", 6380),),
        4,
        True,
    )
    assert (target.username, target.password) == ("app", "s3cret")
    assert "s3cret" not in target.redacted()
    assert "s3cret" not in repr(target)
    settings = KeyValueSettings(databases=(RedisDatabaseSettings("cache", target),))
    assert "s3cret" not in repr(settings)


def test_read_only_and_cluster_options_stay_out_of_the_driver_url() -> None:
    target = RedisTarget.parse("redis://h:6379/2?read_only=true&cluster=false&ssl_cert_reqs=none")
    assert target.read_only
    assert target.mode == "standalone"
    assert target.standalone_url == "redis://h:6379/2?ssl_cert_reqs=none"
    assert not RedisTarget.parse("redis://h:6379/2").read_only


def test_sentinel_url_names_hosts_service_and_database() -> None:
    target = RedisTarget.parse(
        "redis+sentinel://:pw@s1:26379,s2,[::1]:26380/mymaster/2?sentinel_password=sentinel-secret"
    )
    assert target.mode == "sentinel"
    assert target.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert (target.service_name, target.db) == ("mymaster", 2)
    assert (target.password, target.sentinel_password) == ("pw", "sentinel-secret")
    assert "sentinel-secret" not in target.redacted()


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://:pw@n1:7000,n2:7001", "redis://:pw@n1:7000,n2:7001/0?cluster=true"],
)
def test_cluster_by_scheme_or_setting(url: str) -> None:
    target = RedisTarget.parse(url)
    assert target.mode == "cluster"
    assert target.hosts == (("n1", 7000), ("n2", 7001))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://:hunter2@h:6379", "unsupported scheme"),
        ("redis://:hunter2@a:1,b:2/0", "several hosts"),
        ("redis+cluster://:hunter2@a:1/3", "database 0 only"),
        ("redis+sentinel://:hunter2@a:1", "service name is required"),
        ("redis://:hunter2@a:99999/0", "bad host"),
        ("redis://:hunter2@a:6379/x", "must be an integer"),
    ],
)
def test_bad_urls_name_the_setting_and_hide_the_password(url: str, reason: str) -> None:
    with pytest.raises(SettingsError, match=reason) as caught:
        RedisTarget.parse(url)
    assert "PACA_REDIS_DATABASES" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_databases_setting_keeps_commas_of_multi_host_urls() -> None:
    settings = KeyValueSettings.from_source(
        SettingsSource(
            {
                "PACA_REDIS_DATABASES": "cache=redis://h:6379/1, ha=redis+sentinel://s1,s2/m,"
                " big=redis+cluster://n1:7000,n2:7000",
                "PACA_REDIS_POOL_SIZE": "7",
                "PACA_REDIS_COMMAND_TIMEOUT_S": "0.5",
            }
        )
    )
    assert [(d.name, d.target.mode, len(d.target.hosts)) for d in settings.databases] == [
        ("cache", "standalone", 1),
        ("ha", "sentinel", 2),
        ("big", "cluster", 2),
    ]
    assert (settings.pool_size, settings.command_timeout_s) == (7, 0.5)


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"PACA_REDIS_DATABASES": "a=redis://h/0,a=redis://h/1"}, "appears twice"),
        ({"PACA_REDIS_DATABASES": "redis://h/0"}, "name=url"),
        ({"PACA_REDIS_POOL_SIZE": "0"}, "PACA_REDIS_POOL_SIZE"),
        ({"PACA_REDIS_CONNECT_TIMEOUT_S": "0"}, "PACA_REDIS_CONNECT_TIMEOUT_S"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        KeyValueSettings.from_source(SettingsSource(environ))


async def test_clients_are_built_for_each_mode_without_connecting() -> None:
    settings = KeyValueSettings(pool_size=7)
    standalone = make_clients(RedisTarget.parse("redis://:pw@127.0.0.1:1/3"), settings)
    assert standalone.pool.max_connections == 7
    assert standalone.pool.connection_kwargs["db"] == 3
    assert standalone.commands is not standalone.subscriptions
    sentinel = make_clients(
        RedisTarget.parse("redis+sentinel://:pw@s1:1,s2:2/mymaster/2?sentinel_password=sp"),
        settings,
    )
    pool = sentinel.commands.connection_pool
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 2
    sentinels = pool.sentinel_manager.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ] == [("s1", 1), ("s2", 2)]
    assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {"sp"}
    cluster = make_clients(RedisTarget.parse("redis+cluster://n1:7000,n2:7001"), settings)
    assert sorted(cluster.commands.nodes_manager.startup_nodes) == ["n1:7000", "n2:7001"]
    for clients in (standalone, sentinel, cluster):
        await clients.aclose()


@pytest.mark.parametrize(
    ("error", "code", "engine_code"),
    [
        (
            redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "WRONGTYPE",
        ),
        (
            redis_errors.ResponseError("ERR value is not an integer or out of range"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ERR",
        ),
        (redis_errors.ConnectionError("refused"), grpc.StatusCode.UNAVAILABLE, "ConnectionError"),
        (redis_errors.TimeoutError("slow"), grpc.StatusCode.DEADLINE_EXCEEDED, "TIMEOUT"),
        (TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED, "TIMEOUT"),
        (redis_errors.WatchError("changed"), grpc.StatusCode.ABORTED, "WATCH"),
        (redis_errors.AuthenticationError("bad"), grpc.StatusCode.UNAVAILABLE, "AUTH"),
    ],
)
def test_redis_errors_map_to_statuses(
    error: Exception, code: grpc.StatusCode, engine_code: str
) -> None:
    translated = translate(error, "cache")
    assert isinstance(translated, StatusError)
    assert translated.code == code
    assert getattr(translated, "engine_code", "") == engine_code


def test_passwords_are_removed_from_translated_messages() -> None:
    error = redis_errors.ConnectionError("Error connecting to redis://:hunter2@h:1")
    assert "hunter2" not in str(translate(error, "cache", ("hunter2",)))


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (pb.KeyValueCommand(), "c"),
        (pb.KeyValueCommand(get=pb.GetCommand()), "c.get.key"),
        (pb.KeyValueCommand(delete=pb.DeleteKeysCommand()), "c.delete.keys"),
        (pb.KeyValueCommand(expire=pb.ExpireCommand(key="k")), "c.expire.ttl"),
        (pb.KeyValueCommand(rpush=pb.ListPushCommand(key="k")), "c.rpush.values"),
        (pb.KeyValueCommand(sadd=pb.SetMembersCommand(key="k")), "c.sadd.members"),
        (
            pb.KeyValueCommand(
                zadd=pb.ZAddCommand(key="k", members=[pb.ScoredMember(score=float("nan"))])
            ),
            "c.zadd.members[0].score",
        ),
        (
            pb.KeyValueCommand(zrange_by_score=pb.ZRangeByScoreCommand(key="k", count=-1)),
            "c.zrange_by_score.count",
        ),
    ],
)
def test_bad_commands_name_the_field(command: pb.KeyValueCommand, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        build(command, "c")
    assert caught.value.field == field


def test_commands_that_write_are_marked() -> None:
    writes = {
        name
        for name, message in (
            ("get", pb.KeyValueCommand(get=pb.GetCommand(key="k"))),
            ("incr", pb.KeyValueCommand(incr=pb.IncrCommand(key="k"))),
            ("lpop", pb.KeyValueCommand(lpop=pb.ListPopCommand(key="k"))),
            ("zscore", pb.KeyValueCommand(zscore=pb.ZScoreCommand(key="k"))),
            ("ttl", pb.KeyValueCommand(ttl=pb.TtlCommand(key="k"))),
        )
        if build(message, "c").writes
    }
    assert writes == {"incr", "lpop"}


def test_stats_quantiles_follow_recorded_latencies() -> None:
    stats = CommandStats()
    for ms in range(1, 101):
        stats.record("GET", ms / 1000, failed=ms > 98)
    stats.count("SET", failed=False)
    figures = {f.command: f for f in stats.to_proto()}
    assert (figures["GET"].calls, figures["GET"].errors) == (100, 2)
    assert 49 <= figures["GET"].latency_p50_ms <= 51
    assert 98 <= figures["GET"].latency_p99_ms <= 100
    assert (figures["SET"].calls, figures["SET"].latency_p50_ms) == (1, 0.0)
