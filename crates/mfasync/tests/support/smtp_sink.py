"""A real SMTP server for the tests (aiosmtpd, Debian's python3-aiosmtpd).

usage: smtp_sink.py OUTDIR PORT [USER:PASSWORD]

With SMTP_SINK_TLS=MODE:CERT:KEY in the environment, TLS with that PEM
certificate and key: MODE smtps (TLS from the start) or starttls (STARTTLS
offered and required before MAIL).

Listens on 127.0.0.1:PORT and writes every message it accepts to
OUTDIR/msgN.json ({"mail_from", "rcpt_tos", "login", "data" (raw),
"subject" and "body" (decoded)}) before it answers
250, so a client that got its answer finds the file. With USER:PASSWORD, AUTH
(PLAIN/LOGIN, no TLS) is required and only those credentials are accepted.
Writes OUTDIR/ready when listening.
"""
import email
import email.policy
import json
import os
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

outdir, port = sys.argv[1], int(sys.argv[2])
auth = sys.argv[3] if len(sys.argv) > 3 else None


class Handler:
    n = 0

    async def handle_DATA(self, server, session, envelope):
        Handler.n += 1
        login = session.auth_data if session.authenticated else None
        if isinstance(login, bytes):
            login = login.decode()
        rec = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login,
            "data": envelope.content.decode("utf8", "replace"),
        }
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        rec["subject"] = str(msg["subject"])
        rec["body"] = msg.get_body().get_content()
        tmp = os.path.join(outdir, f".msg{Handler.n}.tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(outdir, f"msg{Handler.n}.json"))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword):
        got = f"{auth_data.login.decode()}:{auth_data.password.decode()}"
        if got == auth:
            return AuthResult(success=True, auth_data=auth_data.login)
    return AuthResult(success=False, handled=False)


kw = {}
if auth:
    kw = dict(authenticator=authenticator, auth_require_tls=False, auth_required=True)
tls = os.environ.get("SMTP_SINK_TLS")
if tls:
    import ssl

    mode, cert, key = tls.split(":", 2)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if mode == "smtps":
        kw["ssl_context"] = ctx
    else:
        kw.update(tls_context=ctx, require_starttls=True)
controller = Controller(Handler(), hostname="127.0.0.1", port=port, **kw)
controller.start()
with open(os.path.join(outdir, "ready"), "w") as f:
    f.write("ok")
while True:
    time.sleep(3600)
