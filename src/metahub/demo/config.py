"""The demo's settings: the seed's four machine types in front of the demo OCI layout."""

from __future__ import annotations

from pathlib import Path

from metahub.config import Settings, parse_config

# login (= password) -> features, as in the original MetaHub README and talk.
DEMO_MACHINE_TYPES = {
    "qnib-type1": ["cpu:broadwell"],
    "qnib-type2": ["cpu:skylake"],
    "qnib-type3": ["cpu:coffeelake"],
    "qnib-type4": ["cpu:broadwell", "nvcap:5.2"],
}


def demo_settings(data_dir: Path) -> Settings:
    return parse_config(
        {
            "upstream": {"path": str(data_dir / "demo-layout")},
            "data_dir": str(data_dir),
            "machine_types": [
                {
                    "name": login.removeprefix("qnib-"),
                    "login": login,
                    "password": login,
                    "features": features,
                }
                for login, features in DEMO_MACHINE_TYPES.items()
            ],
        },
        source="demo config",
    )
