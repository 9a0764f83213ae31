//! End to end, no controller: the CRD and the deploy bundle's RBAC as a real kube-apiserver
//! (with the RBAC authorizer) enforces them. Needs `eval "$(tests/e2e/setup.sh)"` first.

mod support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::json;
use support::cluster::{CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT, CRD_NAME, TestCluster};

fn cluster() -> &'static TestCluster {
    let c = TestCluster::shared();
    c.install_crds();
    c
}

fn appenc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("msfcmk.dev", "v1alpha1", "ApplicationEncryption"),
        "applicationencryptions",
    )
}

fn appenc_yaml(name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const KEY_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[test]
fn crd_is_established_with_its_short_name() {
    let c = cluster();
    let names = c
        .kubectl(&[
            "get",
            "crd",
            CRD_NAME,
            "-o",
            "jsonpath={.status.acceptedNames.shortNames}",
        ])
        .ok();
    assert!(names.contains("appenc"), "short names: {names}");
    let resources = c.kubectl(&["api-resources", "--api-group=msfcmk.dev"]).ok();
    assert!(
        resources.contains("applicationencryptions") && resources.contains("appenc"),
        "{resources}"
    );
}

#[test]
fn every_example_is_accepted() {
    let c = cluster();
    let ns = c.create_namespace("examples");
    let mut files: Vec<_> = std::fs::read_dir(support::cluster::repo_path("deploy/examples"))
        .expect("deploy/examples exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the five examples, found {files:?}"
    );
    let mut expected = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read example");
        let rel = file
            .strip_prefix(support::cluster::repo_path("."))
            .expect("inside the repo");
        let rel = rel.to_str().expect("utf-8 path");
        // Examples that name their namespaces are applied as they are; the others go to ours.
        if text.contains("namespace:") {
            c.apply_file(rel, None);
        } else {
            c.apply_file(rel, Some(&ns));
            expected += text.matches("kind: ApplicationEncryption").count();
        }
    }
    let names = c.kubectl(&["get", "appenc", "-n", &ns, "-o", "name"]).ok();
    assert_eq!(names.lines().count(), expected, "{names}");
    let shared = c
        .kubectl(&[
            "get",
            "appenc",
            "-A",
            "-o",
            "jsonpath={.items[*].spec.keyId}",
        ])
        .ok();
    assert!(
        shared
            .matches("0987dcba-09fe-87dc-65ba-ab0987654321")
            .count()
            >= 2,
        "the shared key example has one resource per namespace: {shared}"
    );
}

#[test]
fn printer_columns_show_application_desired_observed_ready_age() {
    let c = cluster();
    let ns = c.create_namespace("columns");
    c.apply_file("deploy/examples/aws-owned-key.yaml", Some(&ns));
    let out = c.kubectl(&["get", "appenc", "-n", &ns]).ok();
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "APPLICATION", "DESIRED", "OBSERVED", "READY", "AGE"],
        "{out}"
    );
    let row: Vec<&str> = lines.next().expect("one row").split_whitespace().collect();
    assert_eq!(
        row[..3],
        ["clickstream", "clickstream-aggregator", "AwsOwnedKey"],
        "{out}"
    );
    let wide = c.kubectl(&["get", "appenc", "-n", &ns, "-o", "wide"]).ok();
    assert!(
        wide.lines().next().expect("header").contains("REASON"),
        "{wide}"
    );
}

/// Applies `spec` and returns the API server's refusal message.
fn refused(c: &TestCluster, ns: &str, name: &str, spec: &str) -> String {
    match c.apply_yaml(&appenc_yaml(name, spec), ns) {
        Ok(out) => panic!("the API server accepted an invalid resource ({name}): {out}"),
        Err(msg) => msg,
    }
}

#[test]
fn customer_managed_key_without_key_id_is_refused() {
    let c = cluster();
    let ns = c.create_namespace("invalid");
    let msg = refused(
        c,
        &ns,
        "no-key",
        "applicationName: app-1\nkeyType: CustomerManagedKey",
    );
    assert!(
        msg.contains("keyId is required when keyType is CustomerManagedKey"),
        "the CEL rule's message: {msg}"
    );
    let msg = refused(
        c,
        &ns,
        "empty-key",
        "applicationName: app-1\nkeyType: CustomerManagedKey\nkeyId: \"\"",
    );
    assert!(msg.contains("keyId is required"), "{msg}");
}

#[test]
fn aws_owned_key_with_key_id_is_refused() {
    let c = cluster();
    let ns = c.create_namespace("invalid");
    let msg = refused(
        c,
        &ns,
        "aok-key",
        &format!("applicationName: app-1\nkeyType: AwsOwnedKey\nkeyId: {KEY_ARN}"),
    );
    assert!(
        msg.contains("must be omitted when keyType is AwsOwnedKey"),
        "{msg}"
    );
}

#[test]
fn bad_enum_values_are_refused() {
    let c = cluster();
    let ns = c.create_namespace("invalid");
    let msg = refused(
        c,
        &ns,
        "bad-type",
        "applicationName: app-1\nkeyType: Customer",
    );
    assert!(
        msg.contains("spec.keyType") && msg.contains("Unsupported value: \"Customer\""),
        "{msg}"
    );
    let msg = refused(
        c,
        &ns,
        "bad-mode",
        &format!(
            "applicationName: app-1\nkeyType: CustomerManagedKey\nkeyId: {KEY_ARN}\nkeyPolicy:\n  mode: Repair"
        ),
    );
    assert!(
        msg.contains("spec.keyPolicy.mode") && msg.contains("Unsupported value: \"Repair\""),
        "{msg}"
    );
    let msg = refused(
        c,
        &ns,
        "bad-deletion",
        "applicationName: app-1\nkeyType: AwsOwnedKey\ndeletionPolicy: Delete",
    );
    assert!(
        msg.contains("spec.deletionPolicy") && msg.contains("Unsupported value: \"Delete\""),
        "{msg}"
    );
}

#[test]
fn bad_application_names_are_refused() {
    let c = cluster();
    let ns = c.create_namespace("invalid");
    let msg = refused(
        c,
        &ns,
        "bad-name",
        "applicationName: \"my app!\"\nkeyType: AwsOwnedKey",
    );
    assert!(
        msg.contains("spec.applicationName") && msg.contains("should match"),
        "{msg}"
    );
    let long = "a".repeat(129);
    let msg = refused(
        c,
        &ns,
        "long-name",
        &format!("applicationName: {long}\nkeyType: AwsOwnedKey"),
    );
    assert!(
        msg.contains("spec.applicationName") && msg.contains("Too long"),
        "{msg}"
    );
    let msg = refused(c, &ns, "no-name", "keyType: AwsOwnedKey");
    assert!(
        msg.contains("spec.applicationName") && msg.contains("Required value"),
        "{msg}"
    );
    // 128 characters is the limit, not over it.
    c.apply_yaml(
        &appenc_yaml(
            "max-name",
            &format!("applicationName: {}\nkeyType: AwsOwnedKey", "a".repeat(128)),
        ),
        &ns,
    )
    .expect("a 128-character name is valid");
}

#[test]
fn unknown_fields_are_refused() {
    let c = cluster();
    let ns = c.create_namespace("invalid");
    let msg = refused(
        c,
        &ns,
        "typo",
        &format!("applicationName: app-1\nkeyType: CustomerManagedKey\nkeyID: {KEY_ARN}"),
    );
    // Server-side apply names it this way; a create with strict field validation says
    // `unknown field "spec.keyID"`.
    assert!(
        msg.contains(".spec.keyID: field not declared in schema"),
        "{msg}"
    );
    let create = c.kubectl_stdin(
        &["create", "-n", &ns, "-f", "-"],
        &appenc_yaml(
            "typo",
            &format!("applicationName: app-1\nkeyType: CustomerManagedKey\nkeyID: {KEY_ARN}"),
        ),
    );
    let msg = create.refused();
    assert!(msg.contains("unknown field \"spec.keyID\""), "{msg}");
}

/// Not only kubectl: a client posting an invalid object gets a 422 from the API server.
#[tokio::test]
async fn api_server_answers_invalid_objects_with_422() {
    let c = cluster();
    let ns = c.create_namespace("invalid");
    let api: Api<DynamicObject> = Api::namespaced_with(c.client().await, &ns, &appenc_resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "msfcmk.dev/v1alpha1",
        "kind": "ApplicationEncryption",
        "metadata": {"name": "no-key"},
        "spec": {"applicationName": "app-1", "keyType": "CustomerManagedKey"}
    }))
    .expect("object");
    match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains("keyId is required"), "{status:?}");
        }
        other => panic!("expected a 422, got {other:?}"),
    }
}

fn sa_kubeconfig(c: &TestCluster) -> std::path::PathBuf {
    c.install_deploy_bundle();
    c.service_account_kubeconfig(CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT)
}

#[test]
fn controller_role_grants_what_the_controller_uses() {
    let c = cluster();
    let kc = sa_kubeconfig(c);
    let appenc = "applicationencryptions.msfcmk.dev";
    let mut missing = vec![];
    let mut check = |verb: &str, resource: &str, extra: &[&str]| {
        if !c.can_i(&kc, verb, resource, extra) {
            missing.push(format!("{verb} {resource} {extra:?}"));
        }
    };
    for verb in ["get", "list", "watch", "patch"] {
        check(verb, appenc, &["-A"]);
        check(verb, appenc, &["-n", "team-x"]);
    }
    check("patch", appenc, &["--subresource=status", "-n", "team-x"]);
    check(
        "patch",
        appenc,
        &["--subresource=finalizers", "-n", "team-x"],
    );
    // kube-runtime's Recorder writes events.k8s.io/v1 Events.
    check("create", "events.events.k8s.io", &["-n", "team-x"]);
    check("patch", "events.events.k8s.io", &["-n", "team-x"]);
    // kube-lease-manager: create the Lease, then get and server-side apply (PATCH) it.
    check(
        "create",
        "leases.coordination.k8s.io",
        &["-n", CONTROLLER_NAMESPACE],
    );
    for verb in ["get", "patch"] {
        check(
            verb,
            "leases.coordination.k8s.io/msf-cmk-controller",
            &["-n", CONTROLLER_NAMESPACE],
        );
    }
    assert!(
        missing.is_empty(),
        "the controller's RBAC lacks: {missing:#?}"
    );
}

#[test]
fn controller_role_grants_nothing_else() {
    let c = cluster();
    let kc = sa_kubeconfig(c);
    let appenc = "applicationencryptions.msfcmk.dev";
    let mut granted = vec![];
    let mut check = |verb: &str, resource: &str, extra: &[&str]| {
        if c.can_i(&kc, verb, resource, extra) {
            granted.push(format!("{verb} {resource} {extra:?}"));
        }
    };
    for verb in ["create", "update", "delete", "deletecollection"] {
        check(verb, appenc, &["-n", "team-x"]);
    }
    check("update", appenc, &["--subresource=status", "-n", "team-x"]);
    for verb in ["get", "list", "watch"] {
        check(verb, "secrets", &["-A"]);
        check(verb, "secrets", &["-n", CONTROLLER_NAMESPACE]);
        check(verb, "configmaps", &["-n", "team-x"]);
        check(verb, "pods", &["-A"]);
        check(verb, "namespaces", &[]);
        check(verb, "events", &["-n", "team-x"]);
    }
    check("delete", "events.events.k8s.io", &["-n", "team-x"]);
    // The core Events API is not used (the same events are readable through it).
    check("create", "events", &["-n", "team-x"]);
    check("patch", "events", &["-n", "team-x"]);
    check(
        "create",
        "serviceaccounts/token",
        &["-n", CONTROLLER_NAMESPACE],
    );
    check("create", "pods", &["-n", CONTROLLER_NAMESPACE]);
    check("update", "deployments.apps", &["-n", CONTROLLER_NAMESPACE]);
    check(
        "create",
        "customresourcedefinitions.apiextensions.k8s.io",
        &[],
    );
    check("update", "clusterroles.rbac.authorization.k8s.io", &[]);
    check("create", "leases.coordination.k8s.io", &["-n", "team-x"]);
    check(
        "get",
        "leases.coordination.k8s.io/kube-controller-manager",
        &["-n", "kube-system"],
    );
    let lease_ns = ["-n", CONTROLLER_NAMESPACE];
    check(
        "patch",
        "leases.coordination.k8s.io/someone-else",
        &lease_ns,
    );
    check(
        "update",
        "leases.coordination.k8s.io/msf-cmk-controller",
        &lease_ns,
    );
    check(
        "delete",
        "leases.coordination.k8s.io/msf-cmk-controller",
        &["-n", CONTROLLER_NAMESPACE],
    );
    check("impersonate", "serviceaccounts", &["-A"]);
    assert!(
        granted.is_empty(),
        "the controller's RBAC grants more than it uses: {granted:#?}"
    );
}

/// The same rules through real requests with the ServiceAccount's token.
#[tokio::test]
async fn controller_service_account_real_calls() {
    let c = cluster();
    c.install_deploy_bundle();
    let ns = c.create_namespace("rbac");
    c.apply_file("deploy/examples/cmk-key-arn.yaml", Some(&ns));
    let sa = c
        .service_account_client(CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT)
        .await;
    let ar = appenc_resource();

    let all: Api<DynamicObject> = Api::all_with(sa.clone(), &ar);
    let list = all
        .list(&ListParams::default())
        .await
        .expect("list across namespaces");
    assert!(!list.items.is_empty());

    let api: Api<DynamicObject> = Api::namespaced_with(sa.clone(), &ns, &ar);
    let name = "payments-fraud";
    api.get(name).await.expect("get");
    // Finalizer add and remove on the main resource (what kube-runtime's finalizer() does).
    let merge = |finalizers: serde_json::Value| {
        Patch::Merge(json!({"metadata": {"finalizers": finalizers}}))
    };
    api.patch(
        name,
        &PatchParams::default(),
        &merge(json!(["msfcmk.dev/cleanup"])),
    )
    .await
    .expect("patch finalizers");
    api.patch(name, &PatchParams::default(), &merge(json!(null)))
        .await
        .expect("remove finalizers");
    // Status by server-side apply.
    let status = json!({
        "apiVersion": "msfcmk.dev/v1alpha1",
        "kind": "ApplicationEncryption",
        "status": {"observedGeneration": 1}
    });
    api.patch_status(
        name,
        &PatchParams::apply("msf-cmk-controller").force(),
        &Patch::Apply(status),
    )
    .await
    .expect("server-side apply of status");

    // Refused: creating specs, deleting them, reading secrets.
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "msfcmk.dev/v1alpha1",
        "kind": "ApplicationEncryption",
        "metadata": {"name": "sneaky"},
        "spec": {"applicationName": "app-1", "keyType": "AwsOwnedKey"}
    }))
    .expect("object");
    assert_forbidden(
        api.create(&PostParams::default(), &obj).await.map(|_| ()),
        "create",
    );
    assert_forbidden(
        api.delete(name, &Default::default()).await.map(|_| ()),
        "delete",
    );
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), CONTROLLER_NAMESPACE);
    assert_forbidden(
        secrets.list(&ListParams::default()).await.map(|_| ()),
        "list secrets",
    );

    // Leader election lease: create, read and renew its own; nothing elsewhere.
    let leases: Api<Lease> = Api::namespaced(sa.clone(), CONTROLLER_NAMESPACE);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "msf-cmk-controller"},
        "spec": {"holderIdentity": "e2e", "leaseDurationSeconds": 15}
    }))
    .expect("lease");
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create lease: {e}"),
    }
    leases.get("msf-cmk-controller").await.expect("get lease");
    let renew = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "spec": {"holderIdentity": "e2e-renewed", "leaseDurationSeconds": 15}
    });
    leases
        .patch(
            "msf-cmk-controller",
            &PatchParams::apply("msf-cmk-controller").force(),
            &Patch::Apply(renew),
        )
        .await
        .expect("renew the lease by server-side apply");
    let elsewhere: Api<Lease> = Api::namespaced(sa.clone(), "default");
    assert_forbidden(
        elsewhere
            .create(&PostParams::default(), &lease)
            .await
            .map(|_| ()),
        "create lease in default",
    );
}

fn assert_forbidden(result: Result<(), kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// `applicationName` and `region` never change after creation: a new value would leave the old
/// application on its key with no resource that owns it. The CRD's transition rules
/// (`self == oldSelf`, and region may not be added or removed) refuse it; other fields still
/// change.
#[test]
fn application_name_and_region_are_immutable() {
    let c = cluster();
    let ns = c.create_namespace("immutable");
    let with_region = "applicationName: app-1\nregion: eu-west-1\nkeyType: AwsOwnedKey";
    c.apply_yaml(&appenc_yaml("pinned", with_region), &ns)
        .expect("created");

    let msg = refused(
        c,
        &ns,
        "pinned",
        "applicationName: app-2\nregion: eu-west-1\nkeyType: AwsOwnedKey",
    );
    assert!(msg.contains("applicationName is immutable"), "{msg}");
    let msg = refused(
        c,
        &ns,
        "pinned",
        "applicationName: app-1\nregion: us-east-1\nkeyType: AwsOwnedKey",
    );
    assert!(msg.contains("region is immutable"), "{msg}");
    let msg = refused(
        c,
        &ns,
        "pinned",
        "applicationName: app-1\nkeyType: AwsOwnedKey",
    );
    assert!(msg.contains("region is immutable"), "removed: {msg}");

    // Without a region at creation, one cannot be added later either.
    c.apply_yaml(
        &appenc_yaml(
            "default-region",
            "applicationName: app-3\nkeyType: AwsOwnedKey",
        ),
        &ns,
    )
    .expect("created");
    let msg = refused(
        c,
        &ns,
        "default-region",
        "applicationName: app-3\nregion: eu-west-1\nkeyType: AwsOwnedKey",
    );
    assert!(msg.contains("region is immutable"), "added: {msg}");

    // The rest of the spec still changes, and the stored object is what was created.
    c.apply_yaml(
        &appenc_yaml(
            "pinned",
            &format!("applicationName: app-1\nregion: eu-west-1\nkeyType: CustomerManagedKey\nkeyId: {KEY_ARN}"),
        ),
        &ns,
    )
    .expect("keyType and keyId may change");
    let stored = c
        .kubectl(&[
            "get",
            "appenc",
            "pinned",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.applicationName}/{.spec.region}/{.spec.keyType}",
        ])
        .ok();
    assert_eq!(stored, "app-1/eu-west-1/CustomerManagedKey");

    // A JSON merge patch (not only kubectl apply) is refused the same way.
    let patch = c.kubectl(&[
        "patch",
        "appenc",
        "pinned",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"applicationName":"app-9"}}"#,
    ]);
    let msg = patch.refused();
    assert!(msg.contains("applicationName is immutable"), "{msg}");
}
