use super::*;

#[test]
fn shipped_defaults_load_and_validate() {
    let c = Config::load(None).expect("defaults are valid");
    assert_eq!((c.render.width, c.render.height), (1080, 1920));
    assert_eq!(c.media.encoder, "auto");
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[media]\nencodr = \"x\"\n").unwrap();
    let err = Config::load(Some(&path)).unwrap_err().to_string();
    assert!(err.contains("encodr"), "{err}");
    std::fs::write(&path, "[media]\nquality = 99\n").unwrap();
    assert!(Config::load(Some(&path)).unwrap_err().to_string().contains("media.quality"));
    std::fs::write(&path, "[media]\ndecoder = \"nvdec\"\n").unwrap();
    assert!(Config::load(Some(&path)).unwrap_err().to_string().contains("media.decoder"));
}

#[test]
fn the_nodes_of_a_cluster_must_share_a_signing_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let cluster = "[redis]\nurl = \"redis://127.0.0.1:1\"\n[postgres]\nurl = \"postgres://x@127.0.0.1:1/x\"\n[s3]\nendpoint = \"http://127.0.0.1:1\"\nbucket = \"b\"\n";
    std::fs::write(&path, cluster).unwrap();
    assert!(Config::load(Some(&path)).unwrap_err().to_string().contains("server.signing_secret"));
    std::fs::write(&path, format!("{cluster}[server]\nsigning_secret = \"shared\"\n")).unwrap();
    Config::load(Some(&path)).expect("a cluster with a shared secret is valid");
}

#[test]
fn caption_defaults_are_a_preset_with_overrides() {
    let c = Config::load(None).unwrap();
    assert!(c.captions.enabled);
    assert_eq!(c.captions.look(), crate::edit::captions::Preset::Karaoke.look());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[captions]\npreset = \"boxed\"\nsize = 0.06\n").unwrap();
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!((c.captions.preset, c.captions.size), (Some(crate::edit::captions::Preset::Boxed), Some(0.06)));
    std::fs::write(&path, "[captions]\ncolor = \"white\"\n").unwrap();
    let err = Config::load(Some(&path)).unwrap_err().to_string();
    assert!(err.contains("captions") && err.contains("#RRGGBB"), "{err}");
    std::fs::write(&path, "[captions]\npreset = \"fancy\"\n").unwrap();
    assert!(Config::load(Some(&path)).unwrap_err().to_string().contains("fancy"));
}
