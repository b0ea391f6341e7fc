"""``python -m certhub.agent --config FILE [--once]``: the same as ``certhub agent``."""

from certhub.cli_agent import agent

if __name__ == "__main__":  # pragma: no cover - exercised through subprocess tests
    agent(prog_name="certhub agent")
