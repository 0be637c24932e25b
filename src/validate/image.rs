//! KYC image checks: the file exists, is not empty or oversized, and its content is the
//! image type it claims to be (by magic bytes, never by trusting the file name).

use std::io::Read;
use std::path::Path;

/// Upper bound for one KYC image. The API documents no limit; 10 MiB is our choice and the
/// sandbox enforces the same.
pub const MAX_IMAGE_BYTES: u64 = 10 * 1024 * 1024;

/// An image format the KYC endpoint accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
}

impl ImageKind {
    fn name(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "JPEG",
            ImageKind::Png => "PNG",
        }
    }

    /// Detects the format from the first bytes of a file.
    pub fn sniff(head: &[u8]) -> Option<ImageKind> {
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageKind::Jpeg)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageKind::Png)
        } else {
            None
        }
    }

    fn from_extension(path: &Path) -> Option<ImageKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jpg" | "jpeg" => Some(ImageKind::Jpeg),
            "png" => Some(ImageKind::Png),
            _ => None,
        }
    }
}

/// Checks one image file against the kinds a KYC part accepts.
pub fn check_image(path: &Path, allowed: &[ImageKind]) -> Result<ImageKind, String> {
    let wanted = allowed
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(" or ");
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("image file {} does not exist", path.display()),
        _ => format!("image file {} cannot be read: {e}", path.display()),
    })?;
    let len = file
        .metadata()
        .map_err(|e| format!("image file {} cannot be read: {e}", path.display()))?
        .len();
    if len == 0 {
        return Err(format!("image file {} is empty", path.display()));
    }
    if len > MAX_IMAGE_BYTES {
        return Err(format!(
            "image file {} is {len} bytes, over the {MAX_IMAGE_BYTES}-byte limit",
            path.display()
        ));
    }
    let mut head = [0u8; 8];
    let n = file.read(&mut head).unwrap_or(0);
    let Some(actual) = ImageKind::sniff(&head[..n]) else {
        return Err(format!(
            "image file {} is not a {wanted} image",
            path.display()
        ));
    };
    if let Some(claimed) = ImageKind::from_extension(path)
        && claimed != actual
    {
        return Err(format!(
            "image file {} is a {} image but its name says {}",
            path.display(),
            actual.name(),
            claimed.name()
        ));
    }
    if !allowed.contains(&actual) {
        return Err(format!(
            "image file {} is a {} image; this field takes {wanted}",
            path.display(),
            actual.name()
        ));
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F'];
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn accepts_what_it_claims() {
        let dir = tempfile::tempdir().unwrap();
        let j = write(dir.path(), "a.jpg", JPEG);
        let p = write(dir.path(), "a.png", PNG);
        assert_eq!(check_image(&j, &[ImageKind::Jpeg]), Ok(ImageKind::Jpeg));
        assert_eq!(
            check_image(&p, &[ImageKind::Jpeg, ImageKind::Png]),
            Ok(ImageKind::Png)
        );
    }

    #[test]
    fn rejects_lies_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let renamed = write(dir.path(), "renamed.jpg", PNG);
        let e = check_image(&renamed, &[ImageKind::Jpeg, ImageKind::Png]).unwrap_err();
        assert!(e.contains("is a PNG image but its name says JPEG"), "{e}");
        let png = write(dir.path(), "selfie.png", PNG);
        let e = check_image(&png, &[ImageKind::Jpeg]).unwrap_err();
        assert!(e.contains("this field takes JPEG"), "{e}");
        let text = write(dir.path(), "x.jpg", b"hello world");
        assert!(
            check_image(&text, &[ImageKind::Jpeg])
                .unwrap_err()
                .contains("not a JPEG")
        );
        let empty = write(dir.path(), "e.jpg", b"");
        assert!(
            check_image(&empty, &[ImageKind::Jpeg])
                .unwrap_err()
                .contains("empty")
        );
        let missing = dir.path().join("missing.jpg");
        assert!(
            check_image(&missing, &[ImageKind::Jpeg])
                .unwrap_err()
                .contains("does not exist")
        );
        let big = dir.path().join("big.jpg");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_IMAGE_BYTES + 1).unwrap();
        assert!(
            check_image(&big, &[ImageKind::Jpeg])
                .unwrap_err()
                .contains("limit")
        );
    }
}
