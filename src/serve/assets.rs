//! The page and its assets, compiled into the binary (no CDN, nothing fetched at run
//! time): plain HTML, CSS and JavaScript from `src/serve/page/`, and the six sample photos
//! of `samples/` (generated faces of people who do not exist).

/// An embedded file: its name in URLs, media type and bytes.
pub struct Asset {
    pub name: &'static str,
    pub media_type: &'static str,
    pub bytes: &'static [u8],
}

pub const INDEX_HTML: &str = include_str!("page/index.html");

/// Served under `/assets/NAME`.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        media_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("page/app.js"),
    },
    Asset {
        name: "style.css",
        media_type: "text/css; charset=utf-8",
        bytes: include_bytes!("page/style.css"),
    },
];

/// Served under `/samples/NAME`.
pub const SAMPLES: &[Asset] = &[
    sample("alice.png", include_bytes!("../../samples/alice.png")),
    sample("bob.png", include_bytes!("../../samples/bob.png")),
    sample("carol.png", include_bytes!("../../samples/carol.png")),
    sample("dave.png", include_bytes!("../../samples/dave.png")),
    sample("erin.png", include_bytes!("../../samples/erin.png")),
    sample("frank.png", include_bytes!("../../samples/frank.png")),
];

const fn sample(name: &'static str, bytes: &'static [u8]) -> Asset {
    Asset {
        name,
        media_type: "image/png",
        bytes,
    }
}

pub fn find<'a>(list: &'a [Asset], name: &str) -> Option<&'a Asset> {
    list.iter().find(|a| a.name == name)
}

/// The page's Content-Security-Policy: only this server's own scripts, styles and
/// pictures (plus `data:`/`blob:` pictures and videos the page makes itself).
pub const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
                       script-src 'self'; style-src 'self'; connect-src 'self'; \
                       frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
