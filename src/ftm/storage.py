"""Store: one storage root, a local folder or s3://bucket/prefix, with the same layout in both.

Everything goes through `pyarrow.fs`, so local and S3 share one code path. boto3 is used only for
what pyarrow cannot do: a create-only put (`IfNoneMatch="*"`), and telling a missing object from
a refused one. Writes are atomic: locally a temporary name then a rename; on S3 a whole-object
put, which readers never see half-written.

S3 refuses with 403 what the credentials may not reach, and pyarrow makes that a bare OSError.
Here it is a SettingsError naming the path and the AWS identity; so are keys S3 does not know and
an endpoint that cannot be reached (one line saying what to check, never a traceback).

S3 also answers 403, not 404, for a missing object when the caller may not list the bucket
(GetObject and HeadObject, "Permissions"), which a role that lists only its prefix may get: so a
refused read is looked up once with a listing of that key, and an object not listed is missing,
as a 404 would say.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shlex
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ftm import layout
from ftm.errors import DataError, FtmError, SettingsError
from ftm.schemas import conform
from ftm.settings import StorageSettings

_GZIP_MAGIC = b"\x1f\x8b"
# How S3's 403 reads in pyarrow's errors (AWS Error ACCESS_DENIED during HeadObject operation)
# and in boto3's error codes.
_ACCESS_DENIED = ("ACCESS_DENIED", "AccessDenied")
# Keys S3 does not accept, in pyarrow's words and boto3's codes.
_BAD_CREDENTIALS = (
    "INVALID_ACCESS_KEY_ID",
    "InvalidAccessKeyId",
    "SIGNATURE_DOES_NOT_MATCH",
    "SignatureDoesNotMatch",
    "EXPIRED_TOKEN",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
)
# An endpoint that cannot be reached: no network, a wrong host, nothing listening.
_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Could not resolve", "Could not connect")


class Store:
    """Reads and writes artifacts by path relative to the storage root (paths from `layout`)."""

    def __init__(self, root: str, endpoint_url: str | None = None, region: str | None = None):
        self.root = root
        self.endpoint_url = endpoint_url
        self.region = region
        parsed = urlparse(root)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise SettingsError(f"storage.root {root!r} names no bucket: write s3://bucket/prefix")
            self.bucket = parsed.netloc
            self.prefix = parsed.path.strip("/")
            self._base = f"{self.bucket}/{self.prefix}".rstrip("/")
            self.fs: pafs.FileSystem = _s3_filesystem(endpoint_url, region)
        elif parsed.scheme in ("", "file"):
            local = parsed.path if parsed.scheme == "file" else root
            self.bucket = None
            self._base = os.path.abspath(os.path.expanduser(local))
            self.fs = pafs.LocalFileSystem()
        else:
            raise SettingsError(f"storage.root {root!r} is neither a folder nor s3://bucket/prefix")

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> Store:
        return cls(settings.root, settings.endpoint_url, settings.region)

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def command(self, words: str) -> str:
        """The ftm command line `ftm WORDS` for this data: with --root unless the root is the
        default, so that a command a message suggests finds the same data when pasted."""
        default = StorageSettings.model_fields["root"].default
        if os.path.abspath(os.path.expanduser(self.root)) == os.path.abspath(default) or self.root == default:
            return f"ftm {words}"
        return f"ftm {words} --root {shlex.quote(self.root)}"

    def uri(self, path: str = "") -> str:
        """Where a path lives, for messages: a folder path or an s3:// URI."""
        full = self._full(path)
        return f"s3://{full}" if self.is_s3 else full

    def check_writable(self) -> None:
        """Writes and removes a probe at the root, before any work: a root that cannot be written
        (a read-only or immutable folder, a bucket the credentials may not write) is a SettingsError
        naming it, not a traceback after minutes of work. The probe's name starts with `_`, which
        dataset readers skip, and it is removed at once."""
        try:
            if self.is_s3:
                probe = f"_ftm-write-check-{uuid.uuid4().hex}"
                self.write_bytes(probe, b"")
                self.delete(probe)
                return
            # A root not made yet is not made here: its nearest folder must let it be made.
            folder = Path(self._base)
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            probe_folder(folder)
        except OSError as error:
            raise SettingsError(
                f"cannot write to the storage root {self.uri()} ({error.strerror or error}): choose a "
                "folder you can write with --root (or FTM_STORAGE__ROOT), or make this one writable"
            ) from None

    # --- bytes -------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        try:
            with self._access(path):
                return self.fs.get_file_info(self._full(path)).type == pafs.FileType.File
        except FileNotFoundError:  # S3's 403 for a missing object, see the module's docstring
            return False

    def read_bytes(self, path: str) -> bytes:
        try:
            with self._access(path), self.fs.open_input_stream(self._full(path)) as stream:
                return stream.read()
        except FileNotFoundError:
            raise DataError(f"{self.uri(path)} does not exist") from None

    def download(self, path: str, destination: Path) -> None:
        """Copies a file to a local one in pieces: input files can be larger than memory."""
        try:
            with (
                self._access(path),
                self.fs.open_input_stream(self._full(path)) as stream,
                open(destination, "wb") as local,
            ):
                shutil.copyfileobj(stream, local, 8 << 20)
        except FileNotFoundError:
            raise DataError(f"{self.uri(path)} does not exist") from None

    def write_bytes(self, path: str, data: bytes) -> None:
        """Writes atomically: nobody ever reads a half-written file."""
        full = self._full(path)
        if self.is_s3:
            with self._access(path, "write"), self.fs.open_output_stream(full) as stream:
                stream.write(data)
            return
        os.makedirs(os.path.dirname(full), exist_ok=True)
        temporary = f"{full}.tmp-{uuid.uuid4().hex}"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, full)

    def create_bytes(self, path: str, data: bytes) -> bool:
        """Writes only if nothing is there yet; returns False (and writes nothing) if it is."""
        full = self._full(path)
        if self.is_s3:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                self._s3_client().put_object(
                    Bucket=self.bucket, Key=full.split("/", 1)[1], Body=data, IfNoneMatch="*"
                )
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "412"):
                    return False
                if code in _ACCESS_DENIED or code == "403":
                    raise SettingsError(self._denied(path, "write")) from None
                raise self._failure(path, str(error)) from None
            except BotoCoreError as error:  # no endpoint, no credentials
                raise self._failure(path, str(error)) from None
            return True
        os.makedirs(os.path.dirname(full), exist_ok=True)
        temporary = f"{full}.tmp-{uuid.uuid4().hex}"
        with open(temporary, "wb") as handle:
            handle.write(data)
        try:
            os.link(temporary, full)  # fails if the name exists: atomic and create-only at once
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
        return True

    def list(self, prefix: str, recursive: bool = True) -> list[str]:
        """Files under a folder (or only those directly in it), as sorted paths relative to the
        root; temporary files left out."""
        return sorted(
            path for path in self._entries(prefix, recursive, pafs.FileType.File) if ".tmp-" not in path
        )

    def folders(self, prefix: str) -> list[str]:
        """The folders directly in a folder, as sorted paths relative to the root."""
        return sorted(self._entries(prefix, False, pafs.FileType.Directory))

    def _entries(self, prefix: str, recursive: bool, kind: pafs.FileType) -> list[str]:
        selector = pafs.FileSelector(self._full(prefix), recursive=recursive, allow_not_found=True)
        start = len(self._base) + 1 if self._base else 0
        with self._access(prefix, "list"):
            found = self.fs.get_file_info(selector)
        return [info.path[start:] for info in found if info.type == kind]

    def size(self, path: str) -> int:
        with self._access(path):
            return self.fs.get_file_info(self._full(path)).size

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._access(path, "delete"):
            self.fs.delete_file(self._full(path))

    def delete_folder(self, prefix: str) -> None:
        for path in self.list(prefix):
            self.delete(path)
        if not self.is_s3 and os.path.isdir(self._full(prefix)):
            self.fs.delete_dir(self._full(prefix))

    # --- JSON --------------------------------------------------------------------------------

    def read_json(self, path: str) -> Any:
        """Reads JSON, plain or gzip-compressed (the earlier pipeline gzipped its manifest)."""
        data = self.read_bytes(path)
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{self.uri(path)} is not valid JSON: {error}") from None

    def write_json(self, path: str, value: Any) -> None:
        self.write_bytes(path, _json_bytes(value))

    def create_json(self, path: str, value: Any) -> bool:
        return self.create_bytes(path, _json_bytes(value))

    # --- Parquet -----------------------------------------------------------------------------

    def read_table(
        self, path: str, schema: pa.Schema | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """Reads a Parquet file; with a schema, checks it and names the file and column if off.

        With `columns`, reads only those (and checks only those of the schema)."""
        if schema is not None and columns is not None:
            schema = pa.schema([schema.field(name) for name in columns])
        try:
            try:
                with self._access(path):
                    table = pq.read_table(self._full(path), filesystem=self.fs, columns=columns)
            except pa.ArrowInvalid:
                if columns is None:
                    raise
                # A column the file lacks: read those it has, so that the schema check names the
                # missing one (or fills in a column added later, see ADDED_COLUMNS).
                present = set(pq.read_schema(self._full(path), filesystem=self.fs).names)
                kept = [name for name in columns if name in present]
                table = pq.read_table(self._full(path), filesystem=self.fs, columns=kept)
        except FileNotFoundError:
            raise DataError(f"{self.uri(path)} does not exist") from None
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(f"{self.uri(path)} is not a readable Parquet file: {error}") from None
        return conform(table, schema, self.uri(path)) if schema is not None else table

    def write_table(self, path: str, table: pa.Table, schema: pa.Schema | None = None) -> int:
        """Writes a Parquet file atomically and returns its size in bytes."""
        if schema is not None:
            table = conform(table, schema, self.uri(path))
        table = _partitioned(table, layout.quarter_of(path))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", use_dictionary=_dictionary_columns(table.schema))
        data = sink.getvalue().to_pybytes()
        self.write_bytes(path, data)
        return len(data)

    # --- internals ---------------------------------------------------------------------------

    def _full(self, path: str) -> str:
        path = path.strip("/")
        if not path:
            return self._base
        return f"{self._base}/{path}" if self._base else path

    def _s3_client(self):  # boto3 only where pyarrow cannot: conditional puts, missing or refused
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region)

    @contextlib.contextmanager
    def _access(self, path: str, verb: str = "read") -> Iterator[None]:
        """S3's 403 for `path` as a SettingsError naming it and the identity; on a read, a
        FileNotFoundError instead when a listing of the key shows it missing (module docstring)."""
        try:
            yield
        except OSError as error:
            if not self.is_s3 or isinstance(error, FileNotFoundError):
                raise
            if not any(code in str(error) for code in _ACCESS_DENIED):
                raise self._failure(path, str(error)) from None
            # A HEAD's 403 has no body to say why; the listing's error does.
            listed = self._listed(path) if verb == "read" else None
            if listed is False:
                raise FileNotFoundError(self.uri(path)) from None
            if isinstance(listed, str):
                raise self._failure(path, listed) from None
            raise SettingsError(self._denied(path, verb)) from None

    def _listed(self, path: str) -> bool | str | None:
        """Whether a listing shows the object; None when the listing is refused too, or the
        refusal's message when it says the credentials are not valid."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._full(path).split("/", 1)[1]
        try:
            reply = self._s3_client().list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except (BotoCoreError, ClientError) as error:
            return str(error) if any(code in str(error) for code in _BAD_CREDENTIALS) else None
        return any(item["Key"] == key for item in reply.get("Contents", []))

    def _failure(self, path: str, message: str) -> FtmError:
        """An S3 call that failed, as one line: what failed and what to check."""
        where = self.endpoint_url or f"AWS S3 ({self.region or 'the default region'})"
        detail = _aws_detail(message)
        if any(code in message for code in _UNREACHABLE):
            return SettingsError(
                f"cannot reach {where} for {self.uri(path)} ({detail}): check the network, "
                "storage.endpoint_url and storage.region"
            )
        if any(code in message for code in _BAD_CREDENTIALS):
            return SettingsError(
                f"S3 at {where} refused these AWS credentials for {self.uri(path)} ({detail}): check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE (`aws sts get-caller-identity`)"
            )
        if "NoSuchBucket" in message or "NO_SUCH_BUCKET" in message:
            return SettingsError(f"the bucket of {self.uri(path)} does not exist: check storage.root")
        return FtmError(f"S3 call for {self.uri(path)} failed: {detail}")

    def _denied(self, path: str, verb: str) -> str:
        try:
            import boto3

            who = boto3.client("sts", region_name=self.region).get_caller_identity()["Arn"]
        except Exception:  # the error is the refusal; who asked is a detail
            who = "these AWS credentials"
        return (
            f"access denied to {self.uri(path)}: {who} may not {verb} it. A batch job's role reaches "
            "only s3://BUCKET/PREFIX/ of `ftm deploy` (aws.bucket, aws.prefix): keep the inputs and "
            "storage.root under it, or give that identity access to this path"
        )


def _aws_detail(message: str) -> str:
    """The part of an SDK message that says what went wrong, on one line: pyarrow's "AWS Error
    X during Y operation: why" without the request id, or the SDK's own message."""
    text = " ".join(message.split())
    if "AWS Error" in text:
        text = text[text.index("AWS Error") + len("AWS Error ") :]
    text = text.split(" (Request ID")[0].split("; Details:")[0]
    return text[:200]


def _s3_filesystem(endpoint_url: str | None, region: str | None) -> pafs.S3FileSystem:
    # pyarrow ignores AWS_ENDPOINT_URL*, so the endpoint is always passed explicitly.
    options: dict[str, Any] = {}
    if endpoint_url:
        parsed = urlparse(endpoint_url)
        if not parsed.netloc:
            raise SettingsError(f"storage.endpoint_url {endpoint_url!r} is not a URL: write http://host:port")
        options["endpoint_override"] = parsed.netloc
        options["scheme"] = parsed.scheme or "https"
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


def probe_folder(folder: Path) -> None:
    """Writes and removes an empty file in a local folder: an OSError says why it cannot be
    written, before any work rather than after it. The name starts with `_`, which dataset readers
    skip, should a kill leave it behind."""
    probe = folder / f"_ftm-write-check-{uuid.uuid4().hex}"
    probe.write_bytes(b"")
    probe.unlink()


def _partitioned(table: pa.Table, quarter: str | None) -> pa.Table:
    """A file in a `quarter=Q` folder carries `quarter` (the folder's, where the table has none),
    dictionary-encoded: pandas (pyarrow) reads a hive folder's `quarter` as a dictionary and
    refuses to merge it with a plain string column of the same name ("Field quarter has
    incompatible types"), while polars and duckdb read either. In the file, a quarter read alone
    (or one file) still has its quarter. `conform` decodes it again."""
    if quarter is None:
        return table
    name = layout.PARTITION
    if name in table.column_names:
        index = table.column_names.index(name)
        column = table.column(index)
        if pa.types.is_dictionary(column.type):
            return table
        encoded = column.cast(pa.string()).dictionary_encode()
        field = pa.field(name, encoded.type, table.schema.field(index).nullable)
        return table.set_column(index, field, encoded)
    encoded = pa.DictionaryArray.from_arrays(
        pa.array([0] * table.num_rows, pa.int32()), pa.array([quarter], pa.string())
    )
    return table.append_column(pa.field(name, encoded.type, nullable=False), encoded)


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, default=str) + "\n").encode()


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Parquet leaf columns to dictionary-encode: all but floating-point ones. Floats, such as the
    map's embeddings, gain nothing from a dictionary, and decoding one made reading a
    2,000,000-sentence quarter's embeddings three to eight times slower."""

    def leaves(name: str, kind: pa.DataType) -> Iterator[str]:
        if pa.types.is_struct(kind):
            for child in kind:
                yield from leaves(f"{name}.{child.name}", child.type)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            yield from leaves(f"{name}.list.element", kind.value_type)
        elif not pa.types.is_floating(kind):
            yield name

    return [leaf for field in schema for leaf in leaves(field.name, field.type)]
