"""certhub's device agent: onboarding through DPS with a CSR, a connection to the hub
on the operational certificate, renewal before expiry (hub credentials API or DPS),
recovery, and a connection applications can share.

::

    config = load_config(Path("agent.toml"))
    agent = Agent(config)
    agent.on_method(handle_method)            # optional application handlers
    exit_code = await agent.run()              # or: await agent.run_once()

The agent reaches the server only over the network (``transport``); it never imports
the server's packages. Modules: :mod:`.config`, :mod:`.schedule` (``next_renewal``),
:mod:`.keystore`, :mod:`.transport`, :mod:`.mqttclient`, :mod:`.dps`, :mod:`.hub`,
:mod:`.lifecycle`, :mod:`.agent`, :mod:`.logs`, :mod:`.hooks`, :mod:`.errors`.
See docs/agent.md for the protocol walk-through.
"""

from certhub.agent.agent import Agent, AsyncioSleeper, ExitCode, Sleeper
from certhub.agent.certs import CertificateInfo
from certhub.agent.config import (
    AgentConfig,
    ClockConfig,
    DpsConfig,
    HubConfig,
    LogConfig,
    RenewalConfig,
    SymmetricKeyOnboarding,
    X509Onboarding,
    load_config,
    parse_config,
)
from certhub.agent.errors import (
    AgentError,
    ConfigError,
    ConnectionRefused,
    DeviceDisabled,
    KeyStoreError,
    ProtocolError,
    ProvisioningError,
    RenewalError,
    ReonboardRequired,
    TransportError,
)
from certhub.agent.hub import Handlers, HubConnection
from certhub.agent.keystore import AgentState, KeyStore
from certhub.agent.lifecycle import STEPS
from certhub.agent.logs import JsonLinesFormatter, configure_logging
from certhub.agent.schedule import RenewalWindow, backoff_delay, next_renewal
from certhub.agent.transport import ClientCertificate, Endpoint, Stream, TlsTransport, Transport

__all__ = [
    "STEPS",
    "Agent",
    "AgentConfig",
    "AgentError",
    "AgentState",
    "AsyncioSleeper",
    "CertificateInfo",
    "ClientCertificate",
    "ClockConfig",
    "ConfigError",
    "ConnectionRefused",
    "DeviceDisabled",
    "DpsConfig",
    "Endpoint",
    "ExitCode",
    "Handlers",
    "HubConfig",
    "HubConnection",
    "JsonLinesFormatter",
    "KeyStore",
    "KeyStoreError",
    "LogConfig",
    "ProtocolError",
    "ProvisioningError",
    "RenewalConfig",
    "RenewalError",
    "RenewalWindow",
    "ReonboardRequired",
    "Sleeper",
    "Stream",
    "SymmetricKeyOnboarding",
    "TlsTransport",
    "Transport",
    "TransportError",
    "X509Onboarding",
    "backoff_delay",
    "configure_logging",
    "load_config",
    "next_renewal",
    "parse_config",
]
