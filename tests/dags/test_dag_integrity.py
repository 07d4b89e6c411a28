"""Every DAG file parses without errors, database queries or connection look-ups."""

import json
import subprocess
import sys
import textwrap

from invoice_delivery import settings

DAGS = settings.PROJECT_ROOT / "dags"

_PARSE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys
    connects, lookups = [], []

    def audit(event, args):
        if event == "socket.connect":
            connects.append(repr(args[1]))

    sys.addaudithook(audit)
    from airflow.sdk import BaseHook

    def record_lookup(conn_id, *a, **k):
        lookups.append(conn_id)
        raise RuntimeError("connection looked up at parse time: " + conn_id)

    BaseHook.get_connection = classmethod(lambda cls, conn_id, *a, **k: record_lookup(conn_id))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=sys.argv[1])
    print(json.dumps({
        "dag_ids": sorted(bag.dag_ids),
        "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
        "connects": connects,
        "lookups": lookups,
        "dags": {d.dag_id: {"tags": sorted(d.tags), "retries": d.default_args.get("retries"),
                            "catchup": d.catchup, "tz": str(d.start_date.tzinfo) if d.start_date else None,
                            "doc": bool(d.doc_md)} for d in bag.dags.values()},
    }))
    """
)


def _parse(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.PROJECT_ROOT / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/parse.db",
    }
    result = subprocess.run([sys.executable, "-c", _PARSE_SCRIPT, str(DAGS)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dag_files_parse_cleanly(tmp_path):
    parsed = _parse(tmp_path)

    assert parsed["import_errors"] == {}
    assert "invoice_delivery" in parsed["dag_ids"]
    assert parsed["connects"] == [], "a DAG file opened a network connection at parse time"
    assert parsed["lookups"] == [], "a DAG file looked up an Airflow connection at parse time"
    for dag_id, facts in parsed["dags"].items():
        assert facts["tags"], f"{dag_id} has no tags"
        assert facts["retries"] and facts["retries"] >= 2, f"{dag_id} retries fewer than 2 times"
        assert facts["catchup"] is False, f"{dag_id} must state catchup=False"
        assert facts["tz"], f"{dag_id} start_date is not time-zone aware"
        assert facts["doc"], f"{dag_id} has no doc_md"
