"""certhub: a self-hosted, Azure IoT Hub-compatible hub for the whole life of a
device's X.509 operational certificate.

Layers (dependencies point downward only)::

    pki/       the authority: CAs, policies, CSR validators, leaf building
    mqtt/      sans-I/O MQTT 3.1.1 codec and server session
    query/     the IoT Hub query language
    registry/  the store (SQLAlchemy Core + Alembic; SQLite or PostgreSQL)
    dps/ hub/ service/   protocol front-ends, wired together in app.py
    agent/ sim/          device side; talk to the server over the network only
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
