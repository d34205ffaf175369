#!/usr/bin/env python3
"""A protocol-faithful fake of the Google Cloud Storage XML API, written for
flowlake's ingester tests (ingester/tests/gcs.rs). Python stdlib only.

It serves the part of the XML API that object_store 0.13's GCS client uses
(object_store/src/gcp/client.rs), with the semantics of Google's public XML API
reference (cloud.google.com/storage/docs/xml-api/*, request-preconditions,
multipart-uploads). It was checked against those documents, not against real GCS.

  PUT    /BUCKET/OBJECT                    upload; x-goog-if-generation-match
                                           (0 = only if absent) -> 412 when it fails
  PUT    /BUCKET/OBJECT + x-goog-copy-source: BUCKET/OBJECT
                                           copy (same preconditions on the destination)
  GET    /BUCKET/OBJECT[?generation=G]     download; Range (206, 416), If-Match,
  HEAD   /BUCKET/OBJECT                    If-None-Match, If-(Un)Modified-Since
  DELETE /BUCKET/OBJECT                    204; 404 NoSuchKey
  GET    /BUCKET?list-type=2&prefix=&delimiter=&start-after=&continuation-token=&max-keys=
                                           ListBucketResult, lexicographic, paginated
  POST   /BUCKET/OBJECT?uploads            XML multipart: initiate
  PUT    /BUCKET/OBJECT?partNumber=N&uploadId=U   upload a part (ETag)
  POST   /BUCKET/OBJECT?uploadId=U         complete (CompleteMultipartUpload body)
  DELETE /BUCKET/OBJECT?uploadId=U         abort

Every object has a generation (strictly increasing, microseconds like GCS) and a
metageneration (1). Errors use GCS's XML error document
(<Error><Code/><Message/><Details/></Error>). Buckets are given on the command line
(others answer 404 NoSuchBucket). There is no authentication: object_store's
`disable_oauth` service-account key sends an empty bearer token. Objects live in
memory, one lock serialises every state change, so a conditional write is atomic.

Not implemented (object_store does not use them): the JSON API, resumable uploads,
versioned buckets (only the live generation exists), ACLs, signed URLs, listing
multipart uploads or their parts, crc32c in x-goog-hash (md5 only, none for
multipart objects, whose ETag is not an MD5, as on GCS).

Usage: fake_gcs.py --port PORT --bucket NAME [--bucket NAME ...] [--log FILE]
--log appends one JSON line per request (method, bucket, object, query keys,
precondition header, copy or not, Range, status) for tests to check what was exercised.
"""

import argparse
import base64
import email.utils
import hashlib
import json
import re
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

MIN_PART = 5 * 1024 * 1024  # S3-compatible XML multipart limits
MAX_PARTS = 10000
STORED_HEADERS = (
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
)


class GcsError(Exception):
    def __init__(self, status, code, message, details=""):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def precondition_failed(details):
    return GcsError(
        412,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold.",
        details,
    )


class Obj:
    def __init__(self, data, generation, headers, meta, etag=None, md5=True):
        self.data = data
        self.generation = generation
        self.metageneration = 1
        self.updated = time.time()
        self.headers = headers  # stored content-* headers
        self.meta = meta  # x-goog-meta-* (suffix -> value)
        self.etag = etag or '"%s"' % hashlib.md5(data).hexdigest()
        self.md5 = base64.b64encode(hashlib.md5(data).digest()).decode() if md5 else None


class State:
    def __init__(self, buckets, log_path):
        self.lock = threading.Lock()
        self.buckets = {b: {} for b in buckets}
        self.uploads = {}  # upload id -> dict(bucket, name, headers, meta, parts)
        self.last_generation = 0
        self.log_path = log_path

    def next_generation(self):
        g = max(self.last_generation + 1, time.time_ns() // 1000)
        self.last_generation = g
        return g

    def log(self, entry):
        if self.log_path:
            with self.lock, open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


def iso_date(ts):
    d = datetime.fromtimestamp(ts, tz=timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (d.microsecond // 1000)


def check_generation_preconditions(headers, current):
    """x-goog-if-generation-match / x-goog-if-metageneration-match against the live
    object (`current` may be None): 412 when they do not hold."""
    want = headers.get("x-goog-if-generation-match")
    if want is not None:
        want = want.strip()
        if not want.isdigit():
            raise GcsError(400, "InvalidArgument", "Invalid argument.", "x-goog-if-generation-match")
        if int(want) == 0:
            if current is not None:
                raise precondition_failed("object exists (x-goog-if-generation-match: 0)")
        elif current is None or current.generation != int(want):
            raise precondition_failed("generation does not match")
    mwant = headers.get("x-goog-if-metageneration-match")
    if mwant is not None and (current is None or str(current.metageneration) != mwant.strip()):
        raise precondition_failed("metageneration does not match")


def parse_range(value, size):
    """(start, end inclusive) of a single `bytes=` range, or None to send it all."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value or "")
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # unparsable ranges are ignored, as HTTP allows
    first, last = m.group(1), m.group(2)
    if first == "":
        n = int(last)
        if n == 0:
            raise GcsError(416, "InvalidRange", "The requested range cannot be satisfied.")
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise GcsError(416, "InvalidRange", "The requested range cannot be satisfied.")
    return start, end


def etag_list(value):
    return [v.strip() for v in value.split(",")]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-gcs"

    # --- plumbing ---------------------------------------------------------------

    def log_message(self, fmt, *args):  # quiet; --log records requests
        pass

    @property
    def state(self):
        return self.server.state

    def body(self):
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body=b"", headers=(), content_type=None):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if content_type:
            self.send_header("Content-Type", content_type)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.status = status

    def send_xml(self, status, xml, headers=()):
        body = ("<?xml version='1.0' encoding='UTF-8'?>" + xml).encode()
        self.send(status, body, headers, "application/xml; charset=UTF-8")

    def send_error_xml(self, err):
        xml = "<Error><Code>%s</Code><Message>%s</Message>" % (err.code, escape(err.message))
        if err.details:
            xml += "<Details>%s</Details>" % escape(err.details)
        self.send_xml(err.status, xml + "</Error>")

    def dispatch(self):
        self.status = None
        url = urlsplit(self.path)
        raw = url.path.lstrip("/")
        bucket, _, name = raw.partition("/")
        bucket, name = unquote(bucket), unquote(name)
        query = parse_qs(url.query, keep_blank_values=True)
        q = {k: v[-1] for k, v in query.items()}
        try:
            # Drain the body before answering so the connection stays usable.
            body = self.body() if self.command in ("PUT", "POST") else b""
            if bucket not in self.state.buckets:
                raise GcsError(404, "NoSuchBucket", "The specified bucket does not exist.", bucket)
            if name == "":
                if self.command == "GET":
                    return self.list_objects(bucket, q)
                raise GcsError(405, "MethodNotAllowed", "Bucket operations other than list are not implemented.")
            handler = {
                "PUT": self.put,
                "GET": self.get,
                "HEAD": self.get,
                "DELETE": self.delete,
                "POST": self.post,
            }[self.command]
            return handler(bucket, name, q, body)
        except GcsError as err:
            self.send_error_xml(err)
        finally:
            self.state.log(
                {
                    "method": self.command,
                    "bucket": bucket,
                    "object": name,
                    "query": sorted(query),
                    "if_generation_match": self.headers.get("x-goog-if-generation-match"),
                    "copy": "x-goog-copy-source" in self.headers,
                    "range": self.headers.get("range"),
                    "status": self.status,
                }
            )

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = dispatch

    def object_headers(self, obj):
        h = [
            ("ETag", obj.etag),
            ("Last-Modified", http_date(obj.updated)),
            ("x-goog-generation", str(obj.generation)),
            ("x-goog-metageneration", str(obj.metageneration)),
            ("x-goog-stored-content-length", str(len(obj.data))),
            ("x-goog-stored-content-encoding", obj.headers.get("content-encoding", "identity")),
            ("x-goog-storage-class", "STANDARD"),
        ]
        if obj.md5:
            h.append(("x-goog-hash", "md5=" + obj.md5))
        for k, v in obj.headers.items():
            if k != "content-type":
                h.append((k, v))
        for k, v in obj.meta.items():
            h.append(("x-goog-meta-" + k, v))
        return h

    def upload_headers(self):
        headers = {k: self.headers[k] for k in STORED_HEADERS if self.headers.get(k)}
        headers.setdefault("content-type", "application/octet-stream")
        meta = {
            k[len("x-goog-meta-"):].lower(): v
            for k, v in self.headers.items()
            if k.lower().startswith("x-goog-meta-")
        }
        return headers, meta

    # --- objects ----------------------------------------------------------------

    def put(self, bucket, name, q, body):
        if "uploadId" in q:
            return self.put_part(bucket, name, q, body)
        source = self.headers.get("x-goog-copy-source")
        with self.state.lock:
            objects = self.state.buckets[bucket]
            if source is not None:
                src_bucket, _, src_name = unquote(source.lstrip("/")).partition("/")
                if src_bucket not in self.state.buckets:
                    raise GcsError(404, "NoSuchBucket", "The specified bucket does not exist.", src_bucket)
                src = self.state.buckets[src_bucket].get(src_name)
                if src is None:
                    raise GcsError(404, "NoSuchKey", "The specified key does not exist.",
                                   "No such object: %s/%s" % (src_bucket, src_name))
                check_generation_preconditions(self.headers, objects.get(name))
                if self.headers.get("x-goog-metadata-directive", "COPY").upper() == "REPLACE":
                    headers, meta = self.upload_headers()
                else:
                    headers, meta = dict(src.headers), dict(src.meta)
                obj = Obj(src.data, self.state.next_generation(), headers, meta, src.etag, src.md5 is not None)
                objects[name] = obj
                xml = "<CopyObjectResult><LastModified>%s</LastModified><ETag>%s</ETag></CopyObjectResult>" % (
                    iso_date(obj.updated), escape(obj.etag))
                return self.send_xml(200, xml, self.object_headers(obj))
            md5 = self.headers.get("content-md5")
            if md5 is not None and md5.strip() != base64.b64encode(hashlib.md5(body).digest()).decode():
                raise GcsError(400, "BadDigest", "The Content-MD5 you specified did not match what was received.")
            check_generation_preconditions(self.headers, objects.get(name))
            headers, meta = self.upload_headers()
            obj = Obj(body, self.state.next_generation(), headers, meta)
            objects[name] = obj
        self.send(200, b"", self.object_headers(obj))

    def get(self, bucket, name, q, _body):
        with self.state.lock:
            obj = self.state.buckets[bucket].get(name)
        missing = GcsError(404, "NoSuchKey", "The specified key does not exist.",
                           "No such object: %s/%s" % (bucket, name))
        if obj is None:
            raise missing
        if "generation" in q and q["generation"] != str(obj.generation):
            raise missing  # buckets here are unversioned: only the live generation exists
        h = self.headers
        if h.get("if-match") and obj.etag not in etag_list(h["if-match"]) and h["if-match"].strip() != "*":
            raise precondition_failed("If-Match")
        since = h.get("if-unmodified-since")
        if since and int(obj.updated) > email.utils.parsedate_to_datetime(since).timestamp():
            raise precondition_failed("If-Unmodified-Since")
        headers = self.object_headers(obj) + [("Content-Type", obj.headers["content-type"])]
        inm = h.get("if-none-match")
        if inm and (obj.etag in etag_list(inm) or inm.strip() == "*"):
            return self.send(304, b"", headers)
        since = h.get("if-modified-since")
        if since and int(obj.updated) <= email.utils.parsedate_to_datetime(since).timestamp():
            return self.send(304, b"", headers)
        rng = parse_range(h.get("range"), len(obj.data)) if h.get("range") else None
        if rng is None:
            return self.send(200, obj.data, headers)
        start, end = rng
        headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, len(obj.data))))
        self.send(206, obj.data[start:end + 1], headers)

    def delete(self, bucket, name, q, _body):
        if "uploadId" in q:
            with self.state.lock:
                up = self.state.uploads.get(q["uploadId"])
                if up is None or (up["bucket"], up["name"]) != (bucket, name):
                    raise GcsError(404, "NoSuchUpload", "The requested upload was not found.")
                del self.state.uploads[q["uploadId"]]
            return self.send(204)
        with self.state.lock:
            objects = self.state.buckets[bucket]
            if name not in objects:
                raise GcsError(404, "NoSuchKey", "The specified key does not exist.",
                               "No such object: %s/%s" % (bucket, name))
            check_generation_preconditions(self.headers, objects[name])
            del objects[name]
        self.send(204)

    def list_objects(self, bucket, q):
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        start_after = q.get("start-after", "")
        token = q.get("continuation-token")
        try:
            max_keys = min(int(q.get("max-keys", "1000")), 1000)
        except ValueError:
            raise GcsError(400, "InvalidArgument", "Invalid argument.", "max-keys")
        resume = ""
        if token is not None:
            try:
                resume = base64.urlsafe_b64decode(token.encode()).decode()
            except Exception:
                raise GcsError(400, "InvalidArgument", "Invalid argument.", "continuation-token")
        with self.state.lock:
            objects = self.state.buckets[bucket]
            names = sorted(n for n in objects if n.startswith(prefix) and n > start_after)
            # (name, object or None for a common prefix), lexicographic, prefixes once
            entries, seen = [], set()
            for n in names:
                rest = n[len(prefix):]
                if delimiter and delimiter in rest:
                    p = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                    if p not in seen:
                        seen.add(p)
                        entries.append((p, None))
                else:
                    entries.append((n, objects[n]))
        entries = [e for e in entries if e[0] > resume]
        page, truncated = entries[:max_keys], len(entries) > max_keys
        parts = ["<ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'>",
                 "<Name>%s</Name>" % escape(bucket), "<Prefix>%s</Prefix>" % escape(prefix)]
        if delimiter:
            parts.append("<Delimiter>%s</Delimiter>" % escape(delimiter))
        if start_after:
            parts.append("<StartAfter>%s</StartAfter>" % escape(start_after))
        if token is not None:
            parts.append("<ContinuationToken>%s</ContinuationToken>" % escape(token))
        parts.append("<KeyCount>%d</KeyCount><MaxKeys>%d</MaxKeys>" % (len(page), max_keys))
        parts.append("<IsTruncated>%s</IsTruncated>" % ("true" if truncated else "false"))
        if truncated:
            nxt = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
            parts.append("<NextContinuationToken>%s</NextContinuationToken>" % nxt)
        for n, obj in page:
            if obj is None:
                parts.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % escape(n))
            else:
                parts.append(
                    "<Contents><Key>%s</Key><Generation>%d</Generation><MetaGeneration>%d</MetaGeneration>"
                    "<LastModified>%s</LastModified><ETag>%s</ETag><Size>%d</Size></Contents>"
                    % (escape(n), obj.generation, obj.metageneration, iso_date(obj.updated),
                       escape(obj.etag), len(obj.data)))
        parts.append("</ListBucketResult>")
        self.send_xml(200, "".join(parts))

    # --- XML multipart uploads --------------------------------------------------

    def post(self, bucket, name, q, body):
        if "uploads" in q:
            headers, meta = self.upload_headers()
            upload_id = uuid.uuid4().hex
            with self.state.lock:
                self.state.uploads[upload_id] = {
                    "bucket": bucket, "name": name, "headers": headers, "meta": meta, "parts": {}}
            xml = ("<InitiateMultipartUploadResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"
                   "<Bucket>%s</Bucket><Key>%s</Key><UploadId>%s</UploadId>"
                   "</InitiateMultipartUploadResult>") % (escape(bucket), escape(name), upload_id)
            return self.send_xml(200, xml)
        if "uploadId" in q:
            return self.complete(bucket, name, q["uploadId"], body)
        raise GcsError(400, "InvalidArgument", "POST needs ?uploads or ?uploadId.")

    def put_part(self, bucket, name, q, body):
        try:
            number = int(q.get("partNumber", ""))
        except ValueError:
            raise GcsError(400, "InvalidArgument", "Invalid argument.", "partNumber")
        if not 1 <= number <= MAX_PARTS:
            raise GcsError(400, "InvalidArgument", "Part number must be between 1 and 10000.")
        etag = '"%s"' % hashlib.md5(body).hexdigest()
        with self.state.lock:
            up = self.state.uploads.get(q["uploadId"])
            if up is None or (up["bucket"], up["name"]) != (bucket, name):
                raise GcsError(404, "NoSuchUpload", "The requested upload was not found.")
            up["parts"][number] = (etag, body)
        self.send(200, b"", [("ETag", etag)])

    def complete(self, bucket, name, upload_id, body):
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            raise GcsError(400, "MalformedXML", "The XML you provided was not well-formed.", str(e))
        requested = []
        for part in root.iter():
            if part.tag.rsplit("}", 1)[-1] != "Part":
                continue
            fields = {c.tag.rsplit("}", 1)[-1]: (c.text or "").strip() for c in part}
            requested.append((int(fields.get("PartNumber", "0")), fields.get("ETag", "")))
        if not requested:
            raise GcsError(400, "MalformedXML", "The XML you provided was not well-formed.", "no parts")
        numbers = [n for n, _ in requested]
        if numbers != sorted(set(numbers)):
            raise GcsError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        with self.state.lock:
            up = self.state.uploads.get(upload_id)
            if up is None or (up["bucket"], up["name"]) != (bucket, name):
                raise GcsError(404, "NoSuchUpload", "The requested upload was not found.")
            chunks = []
            for i, (n, etag) in enumerate(requested):
                stored = up["parts"].get(n)
                if stored is None or stored[0].strip('"') != etag.strip('"'):
                    raise GcsError(400, "InvalidPart", "One or more of the specified parts could not be found.",
                                   "part %d" % n)
                if i + 1 < len(requested) and len(stored[1]) < MIN_PART:
                    raise GcsError(400, "EntityTooSmall",
                                   "Your proposed upload is smaller than the minimum allowed object size.",
                                   "part %d is %d bytes" % (n, len(stored[1])))
                chunks.append(stored[1])
            digest = hashlib.md5(b"".join(hashlib.md5(c).digest() for c in chunks)).hexdigest()
            obj = Obj(b"".join(chunks), self.state.next_generation(), up["headers"], up["meta"],
                      '"%s-%d"' % (digest, len(chunks)), md5=False)
            self.state.buckets[bucket][name] = obj
            del self.state.uploads[upload_id]
        xml = ("<CompleteMultipartUploadResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"
               "<Location>http://%s/%s/%s</Location><Bucket>%s</Bucket><Key>%s</Key><ETag>%s</ETag>"
               "</CompleteMultipartUploadResult>") % (
            escape(self.headers.get("host", "")), escape(bucket), escape(name),
            escape(bucket), escape(name), escape(obj.etag))
        self.send_xml(200, xml, [("x-goog-generation", str(obj.generation))])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bucket", action="append", required=True)
    ap.add_argument("--log")
    args = ap.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.state = State(args.bucket, args.log)
    print("fake-gcs listening on http://%s:%d" % (args.host, args.port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
