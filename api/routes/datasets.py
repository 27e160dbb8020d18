"""The datasets a spec may name: the built-in ones, uploads (``POST /datasets``, an ``.npz``)
and folders of pictures in the data directory; uploads can be deleted again."""

from pathlib import Path
from typing import IO, Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import (
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    limit_submissions,
    require_owner,
)
from api.errors import Problem, documented
from api.limits import BodySizeLimit, check_quota, check_upload_cap
from api.schemas import DatasetPublic
from core.config import Settings
from models.datasets import (
    BUILT_IN,
    FOLDERS,
    NAME_PATTERN,
    UPLOADS,
    DatasetInfo,
    custom_datasets,
    find_custom,
    is_slug,
)
from models.errors import SpecError, error_entry
from models.upload_files import NameTaken, publish, receive, remove
from models.uploads import BadUpload, TooLarge, check_npz
from store.datasets import using
from store.db import Engine, session_scope
from store.tokens import Principal

router = APIRouter(
    prefix="/datasets",
    tags=["datasets"],
    responses=documented(400, 401),
    route_class=ReleasingRoute,
)

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "file"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "pattern": NAME_PATTERN,
                            "description": "The name specs use: lowercase letters, digits, "
                            "'-' and '_', up to 64.",
                        },
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "An .npz (numpy.savez) of x_train, y_train, x_test, "
                            "y_test and optionally class_names.",
                        },
                    },
                }
            }
        },
    }
}
UPLOAD_CHECKS = 2
"""Uploads one API process copies and checks at once, in threads of their own: the request
threads keep answering meanwhile, and memory stays bounded (the rest wait their turn)."""
UPLOAD_REASONS = {
    403: "The user keeps 10 uploads already, or the upload would pass their storage quota "
    "(CONVLAB_STORAGE_QUOTA_MB).",
    409: "The name is taken (built in, uploaded or a folder).",
    413: "The upload, or the arrays it unpacks to, are over CONVLAB_MAX_DATASET_BYTES.",
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "The name is no slug, or the file is no dataset (a sentence at "
        "body.file says why: a pickle, not an .npz, shapes, dtypes, labels).",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    },
    507: {
        "model": Problem,
        "description": "The server cannot write to its data directory.",
    },
}
NO_SUCH = {404: "No such dataset."}
DELETE_REASONS = NO_SUCH | {
    400: "A built-in or folder dataset (or a NUL in the URL, or an unknown Host).",
    409: "Queued, running or paused experiments use it, or finished ones do and force is not "
    "given.",
}
_NAME_RULE = (
    "a dataset name is 1 to 64 lowercase letters, digits, '-' and '_', starting with a letter "
    "or digit"
)


@router.get("", response_model=list[DatasetPublic])
def list_datasets(settings: SettingsDep) -> list[DatasetPublic]:
    """Datasets a spec may name (built in, uploaded, folders), and whether each can be used."""
    data_dir = settings.resolved_data_dir
    found = [*BUILT_IN.values(), *custom_datasets(data_dir)]
    return [_public(info, data_dir) for info in found]


@router.get("/{name}", response_model=DatasetPublic, responses=documented(404, reasons=NO_SUCH))
def get_dataset(name: str, settings: SettingsDep) -> DatasetPublic:
    """One dataset as GET /datasets lists it."""
    data_dir = settings.resolved_data_dir
    info = BUILT_IN.get(name) or find_custom(name, data_dir)
    if info is None:
        raise HTTPException(404, f"Dataset {name} not found.")
    return _public(info, data_dir)


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    dependencies=[Depends(limit_submissions)],
    responses=documented(403, 409, 413, 429, reasons=UPLOAD_REASONS) | UPLOAD_ERRORS,
    openapi_extra=UPLOAD_BODY,
)
async def upload_dataset(
    request: Request,
    principal: PrincipalDep,
    settings: SettingsDep,
    engine: EngineDep,
    response: Response,
) -> DatasetPublic:
    """Store an .npz of images and labels as a dataset specs may name. It is checked first
    (no pickles; shapes, dtypes, labels, size; the user's cap on uploads and storage quota)
    and stored whole or not at all."""
    await anyio.to_thread.run_sync(_check_room, engine, principal, settings, 0)
    async with request.form(max_files=1, max_fields=1) as form:
        name, file = form.get("name"), form.get("file")
        if not isinstance(name, str):
            raise SpecError([error_entry(("name",), "Field required", None, "missing")])
        if not isinstance(file, UploadFile):
            raise SpecError(
                [error_entry(("file",), "Field required: the .npz file", None, "missing")]
            )
        info = await anyio.to_thread.run_sync(
            _store, engine, settings, name, file.file, principal, limiter=request.app.state.uploads
        )
    response.headers["Location"] = f"/datasets/{info.name}"
    return _public(info, settings.resolved_data_dir)


@router.delete(
    "/{name}", status_code=204, responses=documented(400, 403, 404, 409, reasons=DELETE_REASONS)
)
def delete_dataset(
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    force: Annotated[
        bool,
        Query(
            description="Delete it although finished experiments trained on it: their models "
            "stay usable for prediction, but they cannot be continued or rerun on it."
        ),
    ] = False,
) -> Response:
    """Delete an uploaded dataset (its owner or an admin), unless experiments use it: never
    while unfinished ones do, and while finished ones do only with ``force``."""
    data_dir = settings.resolved_data_dir
    if name in BUILT_IN:
        raise HTTPException(
            400, f"Dataset {name} is built into the server; only uploaded datasets can be deleted."
        )
    info = find_custom(name, data_dir)
    if info is None:
        raise HTTPException(404, f"Dataset {name} not found.")
    if info.kind == "folder":
        raise HTTPException(
            400,
            f"Dataset {name} is a folder of pictures ({data_dir.resolve() / FOLDERS / name}); "
            "it goes when that folder is removed from the server.",
        )
    require_owner(principal, info.owner, f"delete dataset {name}")
    count, ids = using(session, info, active=True)
    if count:
        raise HTTPException(
            409,
            f"Dataset {name} is used by {count} unfinished experiment(s) ({_some(count, ids)}); "
            "cancel them or let them finish, then delete it.",
        )
    count, ids = using(session, info, active=False)
    if count and not force:
        raise HTTPException(
            409,
            f"Dataset {name} is used by {count} experiment(s) ({_some(count, ids)}); delete "
            "them first, or delete the dataset with force=true: their trained models stay "
            "usable for prediction, but they cannot be continued or rerun on it.",
        )
    remove(data_dir, info)
    return Response(status_code=204)


def _some(count: int, ids: list[str]) -> str:
    """A few of ``count`` experiments' ids."""
    return ", ".join(ids) + (", ..." if count > len(ids) else "")


def _check_room(
    engine: Engine, principal: Principal | None, settings: Settings, adding: int
) -> None:
    """403 unless the user may store an upload of ``adding`` bytes more: under their cap on
    uploads kept and their storage quota."""
    check_upload_cap(principal, settings)
    with session_scope(engine) as session:
        check_quota(session, principal, settings, adding)


def _store(
    engine: Engine,
    settings: Settings,
    name: str,
    source: IO[bytes],
    principal: Principal | None,
) -> DatasetInfo:
    """Check the name, copy the upload into the data directory under a hidden name, check it
    and the user's room for it, then publish it; whatever fails leaves nothing behind."""
    data_dir = settings.resolved_data_dir
    _check_free(name, data_dir)
    try:
        received = receive(data_dir, source)
    except OSError as exc:
        raise HTTPException(
            507,
            f"The server could not write the upload to {data_dir.resolve() / UPLOADS} "
            f"({exc.strerror or exc}); ask its admin to make that folder writable.",
        ) from None
    try:
        _check_room(engine, principal, settings, received[2])
        with received[0].open("rb") as file:
            facts = check_npz(file, settings.max_dataset_bytes)
        return publish(data_dir, name, received, facts, principal.user if principal else None)
    except TooLarge as big:
        raise HTTPException(413, str(big)) from None
    except BadUpload as bad:
        raise SpecError([error_entry(("file",), str(bad), None)]) from None
    except NameTaken:
        raise HTTPException(409, _taken(name, "uploaded meanwhile")) from None
    finally:
        received[0].unlink(missing_ok=True)


def _check_free(name: str, data_dir: Path) -> None:
    """422 for a name that is no slug, 409 for one a dataset has."""
    if not is_slug(name):
        raise SpecError([error_entry(("name",), _NAME_RULE, name)])
    if name in BUILT_IN:
        raise HTTPException(409, _taken(name, "built into the server"))
    existing = find_custom(name, data_dir)
    if existing is not None:
        how = f"a folder in {data_dir.resolve() / FOLDERS}"
        if existing.kind == "upload":
            how = f"uploaded by {existing.owner}" if existing.owner else "uploaded"
        raise HTTPException(409, _taken(name, how))


def _taken(name: str, how: str) -> str:
    return (
        f"A dataset called {name} exists already ({how}); choose another name, or delete the "
        "upload first."
    )


def _public(info: DatasetInfo, data_dir: Path) -> DatasetPublic:
    """A dataset as GET /datasets lists it."""
    root = data_dir.resolve()
    files = [str(root / FOLDERS / info.name)] if info.kind == "folder" else []
    return DatasetPublic(
        name=info.name,
        description=info.description,
        available=info.available(data_dir),
        classes=info.classes,
        shape=list(info.shape),
        train_size=info.train_count,
        test_size=info.test_count,
        class_names=list(info.class_names) if info.class_names else None,
        files=files or [str(root / file) for file in info.archive_files],
        kind=info.kind,
        owner=info.owner,
        created_at=info.created_at,  # type: ignore[arg-type]  # ISO 8601, parsed by pydantic
        bytes=info.size_bytes,
        problem=info.problem,
    )


class UploadBodyLimit:
    """``BodySizeLimit`` with a larger limit for dataset uploads (``POST /datasets``,
    ``CONVLAB_MAX_DATASET_BYTES``) than for every other request: declared or streamed, a body
    over it is refused with a 413 as it arrives, before it is all read or written."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int) -> None:
        self.other = BodySizeLimit(app, max_bytes=max_bytes)
        self.upload = _UploadSizeLimit(app, max_bytes=max_upload_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        uploading = (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].rstrip("/") == router.prefix
        )
        await (self.upload if uploading else self.other)(scope, receive, send)


class _UploadSizeLimit(BodySizeLimit):
    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = (
            f"The upload is over this server's limit of {self.max_bytes:,} bytes for a dataset "
            "(CONVLAB_MAX_DATASET_BYTES)."
        )
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
