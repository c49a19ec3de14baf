#!/usr/bin/env python3
"""A stand-in for the Kubernetes API server, for tests only.

No API server runs on the test machines, so the Kubernetes source of
registry-observer is tested against recorded API responses (in the API
server's wire format) served by this script on 127.0.0.1. It answers the
calls the source makes, from a fixture directory:

  GET /api/v1/events                     -> events-list.json (an EventList)
  GET /api/v1/events?watch=true...       -> the lines of events-watch.jsonl
                                            (first watch only), then holds the
                                            stream open, bounded
  GET /api/v1/namespaces/NS/pods/NAME    -> pods/NS/NAME.json, or
                                            pods/NS/NAME.status.json (a Status
                                            served with its own code), else a
                                            404 Status
  GET /apis/apps/v1/namespaces/NS/replicasets/NAME -> replicasets/NS/NAME.json
                                            or a 404 Status

Like a server that ignores nothing, it does not apply the field selector:
the client-side checks (reason, node, kind) get exercised too. Every request
is appended to --log as one JSON line (method, path, query, authorization),
so tests can assert what was asked. --shift-to-now moves every event time in
served events so the newest is two seconds ago (recorded fixtures stay
recorded; the agent ignores pulls from before its run).

Prints "listening on PORT" once ready. Stops on SIGTERM/SIGINT, and by
itself after --lifetime seconds.
"""

import argparse
import datetime
import http.server
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse

TIME_FIELDS = {"firstTimestamp", "lastTimestamp", "eventTime", "lastObservedTime"}
# The longest a watch is held open; kube-rs asks for 290 s, the tests need
# far less and must not leave threads behind for long.
MAX_HOLD_SECONDS = 20.0


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def format_time(value, micro):
    value = value.astimezone(datetime.timezone.utc)
    if micro:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def walk_times(value, visit):
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TIME_FIELDS and isinstance(item, str):
                value[key] = visit(item)
            else:
                walk_times(item, visit)
    elif isinstance(value, list):
        for item in value:
            walk_times(item, visit)


class Fixtures:
    def __init__(self, directory, shift_to_now):
        self.directory = directory
        self.event_list = self.load("events-list.json")
        with open(os.path.join(directory, "events-watch.jsonl")) as lines:
            self.watch_lines = [json.loads(line) for line in lines if line.strip()]
        self.shift = datetime.timedelta(0)
        if shift_to_now:
            newest = []
            walk_times([self.event_list, self.watch_lines], lambda t: newest.append(parse_time(t)) or t)
            now = datetime.datetime.now(datetime.timezone.utc)
            self.shift = now - datetime.timedelta(seconds=2) - max(newest)
        self.watched = False
        self.lock = threading.Lock()

    def load(self, *parts):
        with open(os.path.join(self.directory, *parts)) as f:
            return json.load(f)

    def shifted(self, value):
        value = json.loads(json.dumps(value))
        walk_times(value, lambda t: format_time(parse_time(t) + self.shift, "." in t))
        return value

    def first_watch(self):
        with self.lock:
            first = not self.watched
            self.watched = True
            return first


def not_found(kind, name):
    return 404, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{kind} "{name}" not found',
        "reason": "NotFound",
        "details": {"name": name, "kind": kind},
        "code": 404,
    }


class Handler(http.server.BaseHTTPRequestHandler):
    fixtures = None
    log_path = None

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        with open(self.log_path, "a") as log:
            log.write(json.dumps({
                "method": "GET",
                "path": url.path,
                "query": {k: v[0] for k, v in query.items()},
                "authorization": self.headers.get("Authorization"),
            }) + "\n")
        if url.path == "/api/v1/events":
            if query.get("watch", ["false"])[0] in ("true", "1"):
                return self.watch(query)
            return self.send_json(200, self.fixtures.shifted(self.fixtures.event_list))
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)", url.path)
        if match:
            return self.send_json(*self.object("pods", match.group(1), match.group(2), "pods"))
        match = re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/replicasets/([^/]+)", url.path)
        if match:
            return self.send_json(*self.object("replicasets", match.group(1), match.group(2), "replicasets.apps"))
        return self.send_json(*not_found("path", url.path))

    def object(self, folder, namespace, name, kind):
        base = os.path.join(self.fixtures.directory, folder, namespace, name)
        if os.path.exists(base + ".json"):
            return 200, self.fixtures.load(base + ".json")
        if os.path.exists(base + ".status.json"):
            status = self.fixtures.load(base + ".status.json")
            return status["code"], status
        return not_found(kind, name)

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def watch(self, query):
        # HTTP/1.0: the body ends when the connection closes, as a watch does.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if self.fixtures.first_watch():
            for line in self.fixtures.watch_lines:
                self.wfile.write((json.dumps(self.fixtures.shifted(line)) + "\n").encode())
                self.wfile.flush()
        hold = min(float(query.get("timeoutSeconds", ["0"])[0] or 0), MAX_HOLD_SECONDS)
        time.sleep(hold)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--shift-to-now", action="store_true")
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args()
    Handler.fixtures = Fixtures(args.fixtures, args.shift_to_now)
    Handler.log_path = args.log
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    lifetime = threading.Timer(args.lifetime, lambda: os._exit(0))
    lifetime.daemon = True
    lifetime.start()
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
