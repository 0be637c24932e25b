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

/// Where an image path from a CSV cell leads: inside `root` (the CSV's folder, or
/// `input.files_root`), never out of it — not by an absolute path, not by `..`, not by a
/// symbolic link that resolves elsewhere. The path returned is the file's real one, which
/// is the file then checked, hashed and sent.
pub fn confined(root: &Path, rel: &str) -> Result<std::path::PathBuf, String> {
    use std::path::Component;
    let root = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    let given = Path::new(rel);
    if given.is_absolute() || given.has_root() {
        return Err(format!(
            "image path '{rel}' is absolute; it must be relative to {}",
            root.display()
        ));
    }
    if given
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(format!(
            "image path '{rel}' climbs out of {} with '..'",
            root.display()
        ));
    }
    let joined = root.join(given);
    let real = std::fs::canonicalize(&joined).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("image file {} does not exist", joined.display()),
        _ => format!("image file {} cannot be read: {e}", joined.display()),
    })?;
    let root_real = std::fs::canonicalize(root)
        .map_err(|e| format!("the files' folder {} cannot be read: {e}", root.display()))?;
    if !real.starts_with(&root_real) {
        return Err(format!(
            "image path '{rel}' leads out of {} (a symbolic link to {})",
            root.display(),
            real.display()
        ));
    }
    Ok(real)
}

/// Checks one image file against the kinds a KYC part accepts: its size, and its content
/// read as an image — the type from its header and its dimensions decoded — never the file
/// name, nor magic bytes alone.
pub fn check_image(path: &Path, allowed: &[ImageKind]) -> Result<ImageKind, String> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
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
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_IMAGE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("image file {} cannot be read: {e}", path.display()))?;
    check_image_bytes(path, &bytes, allowed)
}

/// [`check_image`] of bytes read already (`path` names them in messages): what is uploaded
/// is checked the same way, from the bytes that go.
pub fn check_image_bytes(
    path: &Path,
    bytes: &[u8],
    allowed: &[ImageKind],
) -> Result<ImageKind, String> {
    let wanted = allowed
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(" or ");
    let Some(actual) = ImageKind::sniff(bytes) else {
        return Err(format!(
            "image file {} is not a {wanted} image",
            path.display()
        ));
    };
    // The header decoded: a file that only starts like an image is not one.
    let decoded = imagesize::blob_size(bytes)
        .ok()
        .filter(|d| d.width > 0 && d.height > 0);
    let same_type = matches!(
        (imagesize::image_type(bytes), actual),
        (Ok(imagesize::ImageType::Jpeg), ImageKind::Jpeg)
            | (Ok(imagesize::ImageType::Png), ImageKind::Png)
    );
    if decoded.is_none() || !same_type {
        return Err(format!(
            "image file {} starts like a {} image but is not one (its header does not decode to a size)",
            path.display(),
            actual.name()
        ));
    }
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

    const JPEG: &[u8] = include_bytes!("../../examples/kyc/E1003-selfie.jpg");
    const PNG: &[u8] = include_bytes!("../../examples/kyc/E1003-id-front.png");

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
        // Magic bytes and nothing of an image.
        let fake = write(
            dir.path(),
            "fake.jpg",
            &[
                0xFF, 0xD8, 0xFF, 0xE0, b'n', b'o', b't', b' ', b'a', b'n', b' ', b'i', b'm', b'a',
                b'g', b'e',
            ],
        );
        let e = check_image(&fake, &[ImageKind::Jpeg]).unwrap_err();
        assert!(e.contains("starts like a JPEG image but is not one"), "{e}");
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
