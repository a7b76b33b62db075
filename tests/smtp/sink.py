"""A real SMTP server for the notification tests (aiosmtpd, from PyPI): it listens on
127.0.0.1:PORT, requires AUTH with the login and password given in SINK_USER and
SINK_PASSWORD, and with --cert/--key offers STARTTLS and requires it. Each message it
accepts is written to OUT/NNNN.json (envelope, login, subject and decoded body), atomically.
It prints "ready" when it accepts connections and runs until killed.

    python3 tests/smtp/sink.py PORT OUT [--cert CERT --key KEY]
"""

import argparse
import email
import email.policy
import json
import os
import ssl
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, out):
        self.out = out
        self.n = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": session.auth_data.login.decode() if session.authenticated else "",
            "tls": session.ssl is not None,
            "subject": str(msg["Subject"]),
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "body": body.get_content() if body is not None else "",
            "raw": envelope.original_content.decode("utf-8", "replace"),
        }
        with self.lock:
            self.n += 1
            path = os.path.join(self.out, "%04d.json" % self.n)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 OK"


def main():
    warnings.simplefilter("ignore")
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("out")
    p.add_argument("--cert")
    p.add_argument("--key")
    a = p.parse_args()
    user = os.environ["SINK_USER"].encode()
    password = os.environ["SINK_PASSWORD"].encode()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    kwargs = dict(authenticator=authenticator, auth_required=True)
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        kwargs.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
    else:
        kwargs.update(auth_require_tls=False)
    c = Controller(Sink(a.out), hostname="127.0.0.1", port=a.port, **kwargs)
    c.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
