//! The node configurations of charts/ (one file per StatefulSet, `{id}` and `{hostname}` filled
//! by `meshkitd --id-from-hostname`) parse and give each pod the id its certificate names: the
//! part of the Kubernetes deployment a cluster-less machine can check beyond the manifests'
//! schemas (scripts/check-charts.sh renders and validates those).

use std::path::Path;

use meshkit_node::config::{NodeConfig, Placeholders};

fn charts() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/kustomize"))
}

/// Each file, a pod of its StatefulSet, the offset its args give, and the id that pod gets.
#[test]
fn every_statefulset_config_gives_its_pods_their_ids() {
    let cases = [
        ("base/voter.toml", "meshkit-voter-0", 1, 1, true),
        ("base/voter.toml", "meshkit-voter-2", 1, 3, true),
        ("base/member.toml", "meshkit-member-1", 4, 5, false),
        ("overlays/prod/voter.toml", "meshkit-voter-4", 1, 5, true),
        ("overlays/prod/member.toml", "meshkit-member-0", 6, 6, false),
    ];
    for (file, pod, offset, id, voter) in cases {
        let placeholders = Placeholders::from_hostname(pod, offset).expect("a pod name");
        let config = NodeConfig::load_with(&charts().join(file), &placeholders)
            .unwrap_or_else(|e| panic!("{file} as {pod}: {e}"));
        assert_eq!(config.id().get(), id, "{file} as {pod}");
        assert_eq!(
            config.advertise().map(ToString::to_string),
            Some(format!("{pod}.meshkit:7001")),
            "{file}"
        );
        let leadership = config.leadership().expect("[leadership]");
        assert_eq!(
            leadership.voters.iter().any(|v| v.get() == id),
            voter,
            "{file}: node {id} a voter?"
        );
        // A file meant for the StatefulSet is refused without the flag, naming it.
        let refused = NodeConfig::load(&charts().join(file)).unwrap_err();
        assert!(
            refused.to_string().contains("--id-from-hostname"),
            "{refused}"
        );
    }
}
