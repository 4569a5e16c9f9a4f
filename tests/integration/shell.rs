//! The command as a user meets it in a shell: every `petal` line of the README parses against
//! the real command line (so the README cannot drift from the CLI), `petal --version` names
//! the backends and the bundle format, and `petal completions` prints working scripts.

use crate::util::{petal, repo, tempdir};
use clap::Parser;
use petal_trainer::cli::Cli;

/// The ```sh blocks of a Markdown file, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```sh") || fence.starts_with("```bash") => {
                current = Some(String::new())
            }
            Some(block) if fence.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block");
    blocks
}

/// What a shell word is to a command line: `&&`, `||`, `;` and `|` end a command; `>`, `>>`,
/// `<` and `2>` (alone, or with their file attached as in `2>/dev/null`) redirect.
#[derive(Debug, PartialEq)]
enum Operator {
    Separator,
    /// `file_attached`: the operator's word also holds its file; otherwise the next word is it.
    Redirect {
        file_attached: bool,
    },
}

fn operator(word: &str) -> Option<Operator> {
    if matches!(word, "&&" | "||" | ";" | "|") {
        return Some(Operator::Separator);
    }
    // A file descriptor number right before the operator (`2>`) belongs to it.
    let op = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let file = op
        .strip_prefix(">>")
        .or_else(|| op.strip_prefix('>'))
        .or_else(|| op.strip_prefix('<'))?;
    Some(Operator::Redirect {
        file_attached: !file.is_empty(),
    })
}

/// The commands of a ```sh block: continuation lines joined, each logical line split into
/// words as a POSIX shell does (quotes, backslash escapes, comments; `shlex`), redirections
/// dropped, `a && b` and `a; b` split in two. Variable and glob expansion are left alone:
/// `photos/*.jpg` stays one word, as with no match. Operators are recognised as words of
/// their own, the way a README spaces them.
fn commands(block: &str) -> Vec<Vec<String>> {
    let mut logical = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        match line.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                logical.push(std::mem::take(&mut pending));
            }
        }
    }
    let mut out = Vec::new();
    for line in logical {
        let words = shlex::split(&line)
            .unwrap_or_else(|| panic!("not a complete shell command line: {line}"));
        let mut command = Vec::new();
        let mut skip_next = false;
        for word in words {
            if std::mem::take(&mut skip_next) {
                continue;
            }
            // `a; b`: the shell ends the command at a `;` that ends a word.
            let (word, ends) = match word.strip_suffix(';') {
                Some(w) if !w.is_empty() => (w.to_string(), true),
                _ => (word, false),
            };
            match operator(&word) {
                Some(Operator::Separator) => out.push(std::mem::take(&mut command)),
                Some(Operator::Redirect { file_attached }) => skip_next = !file_attached,
                None => command.push(word),
            }
            if ends {
                out.push(std::mem::take(&mut command));
            }
        }
        out.push(command);
    }
    out.retain(|c| !c.is_empty());
    out
}

/// The `petal` arguments of a command: `petal ARGS` or `cargo run -p petal-trainer -- ARGS`.
fn petal_args(command: &[String]) -> Option<Vec<String>> {
    match command.first().map(String::as_str) {
        Some("petal") => Some(command[1..].to_vec()),
        Some("cargo") if command.get(1).map(String::as_str) == Some("run") => {
            let dash = command.iter().position(|w| w == "--")?;
            Some(command[dash + 1..].to_vec())
        }
        _ => None,
    }
}

#[test]
fn shell_words_follow_the_shell() {
    let words = |line: &str| -> Vec<String> { commands(line).into_iter().flatten().collect() };
    assert_eq!(
        words("petal predict --model 'my bundle' \"a b.jpg\" x\\ y.png # top 5"),
        [
            "petal",
            "predict",
            "--model",
            "my bundle",
            "a b.jpg",
            "x y.png"
        ]
    );
    assert_eq!(
        commands("petal train --print-recipe > my-recipe.toml 2>/dev/null"),
        [["petal", "train", "--print-recipe"]]
    );
    assert_eq!(
        commands("scripts/install-deps && scripts/test"),
        [["scripts/install-deps"], ["scripts/test"]]
    );
    assert_eq!(
        commands("petal train --data d \\\n    --out runs/x\n"),
        [["petal", "train", "--data", "d", "--out", "runs/x"]]
    );
    assert_eq!(
        commands("petal score -m b photos/*.jpg 2> err.txt | tee log; petal eval < /dev/null"),
        [
            vec!["petal", "score", "-m", "b", "photos/*.jpg"],
            vec!["tee", "log"],
            vec!["petal", "eval"]
        ]
    );
}

#[test]
fn every_readme_command_parses_against_the_cli() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let blocks = sh_blocks(&readme);
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    for command in blocks.iter().flat_map(|b| commands(b)) {
        let line = command.join(" ");
        if let Some(args) = petal_args(&command) {
            let argv = std::iter::once("petal".to_string()).chain(args.iter().cloned());
            match Cli::try_parse_from(argv) {
                Ok(_) => checked.push(args.first().cloned().unwrap_or_default()),
                // `--version` and `--help` "fail" to parse by printing their answer.
                Err(e)
                    if matches!(
                        e.kind(),
                        clap::error::ErrorKind::DisplayVersion
                            | clap::error::ErrorKind::DisplayHelp
                    ) =>
                {
                    checked.push(args.first().cloned().unwrap_or_default())
                }
                Err(e) => problems.push(format!("`{line}`:\n{e}")),
            }
        } else if let Some(script) = command[0].strip_prefix("scripts/") {
            // The scripts it names exist and are executable.
            let path = repo().join("scripts").join(script);
            #[cfg(unix)]
            let runnable = {
                use std::os::unix::fs::PermissionsExt;
                path.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            };
            #[cfg(not(unix))]
            let runnable = path.is_file();
            if !runnable {
                problems.push(format!("`{line}`: no executable {}", path.display()));
            }
        } else if command.starts_with(&["cargo".to_string(), "install".to_string()]) {
            // `--path DIR` names a crate of this repository that has the `petal` binary.
            let dir = command
                .iter()
                .position(|w| w == "--path")
                .and_then(|i| command.get(i + 1));
            let manifest = dir.map(|d| repo().join(d).join("Cargo.toml"));
            let has_bin = manifest
                .as_ref()
                .and_then(|m| std::fs::read_to_string(m).ok())
                .is_some_and(|toml| toml.contains("name = \"petal\""));
            if !has_bin {
                problems.push(format!("`{line}`: no crate with the petal binary there"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "README commands that do not run:\n{}",
        problems.join("\n\n")
    );
    // Guard against a parser that silently finds nothing.
    assert!(
        checked.len() >= 15,
        "only {} petal commands found",
        checked.len()
    );
    for sub in [
        "demo", "download", "train", "export", "eval", "score", "predict", "import", "serve",
    ] {
        assert!(
            checked.iter().any(|s| s == sub),
            "the README shows no `petal {sub}`"
        );
    }
}

#[test]
fn readme_says_how_to_install_the_command_right_after_set_up() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let at = |needle: &str| {
        readme
            .find(needle)
            .unwrap_or_else(|| panic!("README.md does not say `{needle}`"))
    };
    let set_up = at("scripts/install-deps && scripts/test");
    let install = at("cargo install --locked --path trainer");
    let commands = at("## Commands");
    assert!(
        set_up < install && install < commands,
        "the install command belongs between the set-up commands and the command list"
    );
    at("petal serve --model runs/r101/bundle");
}

#[test]
fn version_names_the_backends_and_the_bundle_format() {
    let dir = tempdir();
    let out = petal(dir.path(), ["--version"]).success();
    let expected_backends = petal_trainer::cli::backends().join(", ");
    assert_eq!(
        out.trim(),
        format!(
            "petal {} (backends: {expected_backends}; bundle format {})",
            env!("CARGO_PKG_VERSION"),
            petal_shared::bundle::FORMAT_VERSION
        )
    );
    assert!(expected_backends.starts_with("cpu"), "flex is always built");
    assert_eq!(out.contains("wgpu"), cfg!(feature = "wgpu"), "{out}");
    assert_eq!(out.contains("cuda"), cfg!(feature = "cuda"), "{out}");
}

#[test]
fn completions_cover_every_subcommand_for_bash_zsh_and_fish() {
    let dir = tempdir();
    for shell in ["bash", "zsh", "fish"] {
        let script = petal(dir.path(), ["completions", shell]).success();
        for word in ["serve", "predict", "train", "completions", "model", "port"] {
            assert!(script.contains(word), "{shell} completions lack `{word}`");
        }
    }
    let bash = petal(dir.path(), ["completions", "bash"]).success();
    assert!(
        bash.contains("complete -F _petal"),
        "not a bash completion script"
    );
    // bash itself accepts the script, when there is a bash to ask.
    let file = dir.path().join("petal.bash");
    std::fs::write(&file, &bash).unwrap();
    if let Ok(status) = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .status()
    {
        assert!(status.success(), "bash -n rejects the completion script");
    }
    let err = petal(dir.path(), ["completions", "tcsh"]).failure();
    assert!(err.contains("tcsh"), "{err}");
}

/// One convention across commands: whatever a command writes is `-o`/`--output` (the old
/// `--out` only as a hidden alias), the network's input size is `--image-size` (never a
/// visible `--crop`), and no command declares its own `--device` — it is `petal`'s.
#[test]
fn every_command_spells_shared_flags_the_same_way() {
    use clap::CommandFactory;
    let cli = Cli::command();
    let device = cli
        .get_arguments()
        .find(|a| a.get_id() == "device")
        .expect("a global --device");
    assert!(device.is_global_set());
    let mut with_output = Vec::new();
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        let mut subs = vec![sub];
        subs.extend(sub.get_subcommands());
        for cmd in subs {
            for arg in cmd.get_arguments() {
                let long = arg.get_long().unwrap_or_default();
                assert_ne!(long, "device", "{name} declares its own --device");
                assert!(
                    !matches!(long, "out" | "crop" | "output-dir" | "outdir"),
                    "{name}: --{long} is not the convention"
                );
                let visible = arg.get_visible_aliases().unwrap_or_default();
                assert!(
                    !visible.iter().any(|a| *a == "out" || *a == "crop"),
                    "{name}: old spelling shown in --help"
                );
                if long == "output" {
                    assert_eq!(arg.get_short(), Some('o'), "{name}: --output without -o");
                    with_output.push(name.to_string());
                }
            }
        }
    }
    for name in [
        "preprocess",
        "import",
        "download",
        "export",
        "score",
        "eval",
        "train",
        "demo",
    ] {
        assert!(
            with_output.iter().any(|n| n == name),
            "{name} has no -o/--output"
        );
    }
}
