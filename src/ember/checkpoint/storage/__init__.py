"""Store: the Storage contract, locations (paths and URLs -> stores), local disk, fsspec URLs, multipart uploads,
temporaries."""
